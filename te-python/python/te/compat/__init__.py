"""Drop-in compatible modules: `te.compat.datasystem`, `te.compat.mooncake`, `te.compat.memfabric`."""
