//! Where memory lives: host DRAM (`cpu`), a simulated device (`sim:N`) or an
//! Ascend NPU (`npu:N`).

use core::fmt;
use core::str::FromStr;

use crate::error::{Result, Status};

/// A memory location. Text form: `cpu`, `sim:N`, `npu:N` with N a decimal
/// device index from 0 to 65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Location {
    /// Host memory, addressable by the CPU.
    #[default]
    Cpu,
    /// Simulated device memory of te-driver-sim; not host-addressable.
    Sim(u16),
    /// Ascend NPU memory (HBM) through the CANN runtime.
    Npu(u16),
}

const KIND_CPU: u32 = 0;
const KIND_SIM: u32 = 1;
const KIND_NPU: u32 = 2;

impl Location {
    /// The 32-bit wire form: kind in the high 16 bits, index in the low 16.
    pub const fn to_wire(self) -> u32 {
        match self {
            Location::Cpu => KIND_CPU << 16,
            Location::Sim(n) => (KIND_SIM << 16) | n as u32,
            Location::Npu(n) => (KIND_NPU << 16) | n as u32,
        }
    }

    /// Parses the wire form; `None` for an unknown kind or a `cpu` with a
    /// non-zero index.
    pub const fn from_wire(v: u32) -> Option<Location> {
        let index = (v & 0xffff) as u16;
        match v >> 16 {
            KIND_CPU if index == 0 => Some(Location::Cpu),
            KIND_SIM => Some(Location::Sim(index)),
            KIND_NPU => Some(Location::Npu(index)),
            _ => None,
        }
    }

    /// True for host memory, which the CPU can read and write directly.
    pub const fn is_host(self) -> bool {
        matches!(self, Location::Cpu)
    }
}

impl FromStr for Location {
    type Err = Status;

    /// Parses `cpu`, `sim:N` or `npu:N`; anything else is `Invalid` with a
    /// message quoting the input.
    fn from_str(s: &str) -> Result<Location> {
        if s == "cpu" {
            return Ok(Location::Cpu);
        }
        let (kind, index) = s.split_once(':').ok_or_else(|| bad(s))?;
        let digits_ok = !index.is_empty() && index.len() <= 5 && index.bytes().all(|b| b.is_ascii_digit());
        let n: u16 = if digits_ok {
            index.parse().map_err(|_| bad(s))?
        } else {
            return Err(bad(s));
        };
        match kind {
            "sim" => Ok(Location::Sim(n)),
            "npu" => Ok(Location::Npu(n)),
            _ => Err(bad(s)),
        }
    }
}

fn bad(s: &str) -> Status {
    crate::status!(
        Invalid,
        "unknown device name {:?}: expected cpu, sim:N or npu:N",
        s
    )
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Cpu => f.write_str("cpu"),
            Location::Sim(n) => write!(f, "sim:{n}"),
            Location::Npu(n) => write!(f, "npu:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn parses_known_forms() {
        assert_eq!("cpu".parse::<Location>().unwrap(), Location::Cpu);
        assert_eq!("sim:0".parse::<Location>().unwrap(), Location::Sim(0));
        assert_eq!("npu:7".parse::<Location>().unwrap(), Location::Npu(7));
        assert_eq!("npu:65535".parse::<Location>().unwrap(), Location::Npu(65535));
    }

    #[test]
    fn unknown_forms_are_invalid() {
        for s in [
            "gpu:0",
            "0",
            "npu:",
            "npu:x",
            "",
            "cpu:0",
            "CPU",
            "sim:-1",
            "sim:+1",
            "npu:65536",
            "npu:1:2",
            " cpu",
        ] {
            let e = s.parse::<Location>().unwrap_err();
            assert_eq!(e.code(), ErrorCode::Invalid, "{s:?}");
        }
        let e = "gpu:0".parse::<Location>().unwrap_err();
        assert!(e.message().contains("\"gpu:0\""), "{e}");
    }

    #[test]
    fn display_round_trips_and_wire_round_trips() {
        for loc in [Location::Cpu, Location::Sim(3), Location::Npu(65535)] {
            let mut buf = heapless::String::<16>::new();
            core::fmt::write(&mut buf, format_args!("{loc}")).unwrap();
            assert_eq!(buf.parse::<Location>().unwrap(), loc);
            assert_eq!(Location::from_wire(loc.to_wire()), Some(loc));
        }
        assert_eq!(Location::from_wire(0x0000_0001), None);
        assert_eq!(Location::from_wire(0x0003_0000), None);
    }
}
