//! Process-level settings the server needs from the operating system.

/// Raises the open-file limit to its hard maximum (every socket is a file) and keeps large
/// allocations returnable to the system. Returns the open-file limit now in force.
pub fn tune_process() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tuning; it is called before other threads
    // allocate heavily, and any value is valid for M_MMAP_THRESHOLD.
    unsafe {
        // Each password hash allocates 19 MiB. glibc's default raises its mmap threshold after
        // such blocks are freed and then keeps later ones in the heap, where the memory is never
        // given back: a few logins pinned over 1 GiB. A fixed threshold keeps them mmapped.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    raise_open_files()
}

#[cfg(unix)]
fn raise_open_files() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

#[cfg(not(unix))]
fn raise_open_files() -> u64 {
    u64::MAX
}

/// The open-file limit in force.
pub fn open_file_limit() -> u64 {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct passed to it.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            return limit.rlim_cur;
        }
    }
    u64::MAX
}
