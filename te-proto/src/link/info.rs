//! Segment-info paging, initiator side: the query under way, the page
//! waiting to be taken, and the checks every page passes
//! (docs/PROTOCOL.md, "Segment information").
//!
//! The link drives the pages. It asks for the first one, checks each page
//! that arrives, holds it until the shell takes it and then asks for the
//! next one after the last region received, until the peer says there is
//! no more or the caller's cap is reached. At most one page is held, so
//! a peer that always answers "more" costs the initiator one page of
//! memory and stops at the cap.

use super::event::SegmentPage;
use crate::error::{Result, Status};
use crate::location::Location;
use crate::region::Region;
use crate::status;

/// `(location, base)`: the order of the listing.
pub(super) type Key = (Location, u64);

/// The query under way.
#[derive(Debug)]
struct Query {
    /// Most regions the caller accepts, in all pages.
    cap: usize,
    /// Regions handed out so far.
    got: usize,
    /// The cursor of the page asked for (`None`: the first page).
    after: Option<Key>,
    /// The id of the `InfoReq` awaiting its answer (queued or sent);
    /// `None` while a page waits to be taken.
    req: Option<u64>,
}

/// A segment-info query and its page waiting for the shell.
#[derive(Debug, Default)]
pub(super) struct InfoQuery {
    query: Option<Query>,
    page: Option<Result<SegmentPage>>,
    announced: bool,
}

impl InfoQuery {
    /// Whether a query is under way or its last answer not yet taken.
    pub fn busy(&self) -> bool {
        self.query.is_some() || self.page.is_some()
    }

    /// Starts a query for at most `cap` regions; the caller queues its
    /// first `InfoReq` and reports its id with [`asked`](Self::asked).
    /// `Invalid` for a cap of 0, `NotReady` while an earlier query is under
    /// way or its last answer has not been taken.
    pub fn start(&mut self, cap: usize) -> Result<()> {
        if cap == 0 {
            return Err(status!(Invalid, "segment info query for at most 0 regions"));
        }
        if self.busy() {
            return Err(status!(NotReady, "a segment info query is already pending"));
        }
        self.query = Some(Query {
            cap,
            got: 0,
            after: None,
            req: None,
        });
        Ok(())
    }

    /// The id of the query's request awaiting its answer (queued or sent).
    pub fn requested(&self) -> Option<u64> {
        self.query.as_ref().and_then(|q| q.req)
    }

    /// Whether `req_id` is the query's request awaiting its answer.
    pub fn awaits(&self, req_id: u64) -> bool {
        self.requested() == Some(req_id)
    }

    /// The peer refused the query's request with `status`: the query ends
    /// with it. Call only when [`awaits`](Self::awaits) the id.
    pub fn refused(&mut self, status: Status) {
        debug_assert!(self.page.is_none(), "a page waits while a request is out");
        self.query = None;
        self.page = Some(Err(status));
    }

    /// Takes the peer's page answering request `req_id` (which
    /// [`awaits`](Self::awaits) must have matched): each region must follow
    /// the one before it, the first one the cursor asked for, and a page
    /// that says more follow must hold a region. On `Err`, a protocol
    /// violation naming the bad key, the query has ended with that error
    /// and the caller closes the link with it.
    pub fn on_page(
        &mut self,
        more: bool,
        regions: impl Iterator<Item = (Region, Option<u32>)>,
    ) -> Result<()> {
        let Some(q) = self.query.as_mut() else {
            debug_assert!(false, "a page taken with no query under way");
            return Ok(());
        };
        debug_assert!(self.page.is_none(), "a page waits while a request is out");
        let mut page = SegmentPage {
            regions: heapless::Vec::new(),
            rkeys: heapless::Vec::new(),
            more: false,
            truncated: false,
        };
        let mut prev = q.after;
        let mut room = q.cap.saturating_sub(q.got);
        for (r, rkey) in regions {
            let key = (r.span.location, r.span.addr);
            if let Some(p) = prev.filter(|p| key <= *p) {
                let st = match q.after {
                    Some(a) if p == a => status!(
                        Invalid,
                        "segment info page after {}:{:#x} starts at {}:{:#x}, not after it",
                        a.0,
                        a.1,
                        key.0,
                        key.1
                    ),
                    _ => status!(
                        Invalid,
                        "segment info page lists {}:{:#x} after {}:{:#x}, out of order",
                        key.0,
                        key.1,
                        p.0,
                        p.1
                    ),
                };
                return Err(self.fail(st));
            }
            prev = Some(key);
            if room == 0 {
                // The peer has more regions than the caller accepts.
                page.truncated = true;
                continue;
            }
            // The decoder bounded a page by INFO_PAGE_MAX, the capacity.
            let pushed = page.regions.push(r).is_ok() && page.rkeys.push(rkey).is_ok();
            debug_assert!(pushed, "a page beyond INFO_PAGE_MAX regions");
            room -= 1;
        }
        if more && prev == q.after {
            let st = status!(Invalid, "segment info page with more to come lists no region");
            return Err(self.fail(st));
        }
        q.got += page.regions.len();
        if more && room == 0 {
            page.truncated = true;
        }
        page.more = more && !page.truncated;
        if page.more {
            q.after = prev;
            q.req = None;
        } else {
            self.query = None;
        }
        self.page = Some(Ok(page));
        Ok(())
    }

    /// Ends the query with `st` and returns it.
    fn fail(&mut self, st: Status) -> Status {
        self.query = None;
        self.page = Some(Err(st.clone()));
        st
    }

    /// Whether a page waits that [`announce`](Self::announce) has not
    /// reported yet.
    pub fn announce(&mut self) -> bool {
        let new = self.page.is_some() && !self.announced;
        self.announced |= new;
        new
    }

    /// The page waiting, and, when more pages follow, the cursor of the
    /// next one: the caller queues its `InfoReq` and reports its id with
    /// [`asked`](Self::asked).
    pub fn take(&mut self) -> (Option<Result<SegmentPage>>, Option<Option<Key>>) {
        self.announced = false;
        let page = self.page.take();
        let next = match self.query.as_ref() {
            Some(q) if page.is_some() => Some(q.after),
            _ => None,
        };
        (page, next)
    }

    /// The next page's `InfoReq` was queued with id `req_id`.
    pub fn asked(&mut self, req_id: u64) {
        if let Some(q) = self.query.as_mut() {
            q.req = Some(req_id);
        }
    }

    /// The link closed with `why`: a query under way ends with it, in
    /// place of a page with more to come that waits to be taken (the
    /// listing cannot be completed); a last page waiting stays.
    pub fn close(&mut self, why: &Status) {
        if self.query.take().is_some() {
            self.page = Some(Err(why.clone()));
        }
    }
}
