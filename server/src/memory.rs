//! The default memory limit: a share of what the machine (or the container's cgroup) has, so a
//! query that would outgrow the machine spills or fails with RESOURCE_EXHAUSTED instead of
//! having the process killed by the kernel.

/// The share of memory queries may use together by default; the rest is for the process
/// itself (tokio, caches, buffers of streams in flight, what the operators do not account).
const DEFAULT_SHARE: f64 = 0.75;

/// The default memory limit in bytes, or `None` where the machine's memory cannot be read
/// (then the pool is unbounded, as with `memory_limit = "unlimited"`).
pub fn default_memory_limit() -> Option<usize> {
    let total = [physical_memory(), cgroup_limit()]
        .into_iter()
        .flatten()
        .min()?;
    Some((total as f64 * DEFAULT_SHARE) as usize)
}

fn physical_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo_total(&meminfo)
}

fn parse_meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The memory limit of this process's cgroup (v2, then v1), if one is set.
fn cgroup_limit() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .into_iter()
    .find_map(|path| parse_cgroup_limit(&std::fs::read_to_string(path).ok()?))
}

fn parse_cgroup_limit(text: &str) -> Option<u64> {
    // v2 says "max" when unlimited; v1 says a number near 2^63.
    text.trim().parse().ok().filter(|&bytes| bytes < (1 << 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_meminfo_and_cgroup_files() {
        let meminfo = "MemTotal:       24000000 kB\nMemFree:        1000 kB\n";
        assert_eq!(parse_meminfo_total(meminfo), Some(24_000_000 * 1024));
        assert_eq!(parse_cgroup_limit("max\n"), None);
        assert_eq!(parse_cgroup_limit("9223372036854771712\n"), None);
        assert_eq!(parse_cgroup_limit("8589934592\n"), Some(8 << 30));
    }

    #[test]
    fn the_default_is_a_share_of_this_machine() {
        let limit = default_memory_limit().expect("Linux exposes /proc/meminfo");
        let total = physical_memory().unwrap() as f64;
        assert!(limit as f64 <= total * DEFAULT_SHARE && limit > 0);
    }
}
