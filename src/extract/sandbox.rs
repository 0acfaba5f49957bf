//! The converter child's sandbox: what a parser exploit could still do.
//!
//! Resource limits ([`super::isolate`]) stop a document from exhausting the
//! machine; they do not stop code run by a PDFium or calamine exploit from
//! acting as the daemon's user. Before any parser sees a byte of the
//! document (the child only reads it into memory first, to know whether it
//! needs Tesseract) it confines itself:
//!
//! - `PR_SET_NO_NEW_PRIVS`: nothing it runs can gain privileges.
//! - **Landlock** (Linux ≥ 5.13), every filesystem access right handled and
//!   none granted but reading the OCR models' directory (`tessdata`, public
//!   files Tesseract reads when a page needs OCR): it can open no other
//!   file — not `/proc/<daemon>/environ` (every secret), not the state
//!   directory (other teams' uploads, the queue). The libraries it needs
//!   (PDFium, Tesseract) are loaded *before*.
//! - **seccomp** (a denylist built with `seccompiler`): no `socket`,
//!   `connect` and kin (no network, no Unix sockets), no `execve`, no
//!   `ptrace` or `process_vm_*`, no `fork`/`vfork` (threads still work), no
//!   namespace, mount, BPF, keyring or perf calls. Denied calls fail with
//!   `EPERM` rather than killing the child, so a parser that probes for
//!   something finds it missing and the document still converts or is
//!   skipped with a reason.
//!
//! The daemon itself is made non-dumpable ([`make_undumpable`]), so another
//! process of its user cannot read its memory or `/proc/<pid>/environ`.
//!
//! A kernel without Landlock or seccomp filters runs the child with what it
//! has: the daemon warns at start ([`Support::warning`]), it does not refuse.

use std::collections::BTreeMap;

/// What the running kernel offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Support {
    /// The Landlock ABI version (0: none).
    pub landlock_abi: i64,
    /// seccomp filters can be installed.
    pub seccomp: bool,
}

impl Support {
    /// Reads what this kernel supports (no side effects).
    pub fn probe() -> Support {
        // SAFETY: landlock_create_ruleset(NULL, 0, VERSION) only returns the
        // ABI version (or an error); it creates nothing.
        let abi = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<u8>(),
                0usize,
                1u32, // LANDLOCK_CREATE_RULESET_VERSION
            )
        };
        // SAFETY: PR_GET_SECCOMP reads this thread's seccomp mode.
        let seccomp = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) } >= 0;
        Support {
            landlock_abi: abi.max(0),
            seccomp,
        }
    }

    /// What the operator should know, if the sandbox is not whole here.
    pub fn warning(&self) -> Option<String> {
        let mut missing = Vec::new();
        if self.landlock_abi < 1 {
            missing.push("Landlock (Linux 5.13+, enabled with lsm=...,landlock)");
        }
        if !self.seccomp {
            missing.push("seccomp filters (CONFIG_SECCOMP_FILTER)");
        }
        (!missing.is_empty()).then(|| {
            format!(
                "the document converter's sandbox is partial on this kernel: no {}; converters \
                 still run with resource limits and an empty environment",
                missing.join(", no ")
            )
        })
    }
}

/// What [`confine`] put in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Confined {
    pub no_new_privs: bool,
    pub landlock: bool,
    pub seccomp: bool,
}

/// Confines the calling process (the converter child, before it parses the
/// document and before it starts any thread): see the module doc; the
/// directories in `readable` (and what is under them) stay readable, and
/// nothing else can be opened. Parts the kernel lacks are skipped; a part
/// it has that fails to apply is an error (the child then refuses to
/// convert).
pub fn confine(readable: &[&std::path::Path]) -> Result<Confined, String> {
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1) only sets a flag on this process.
    let no_new_privs = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } == 0;
    let support = Support::probe();
    let landlock = if support.landlock_abi >= 1 {
        use landlock::{
            ABI, Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
            RulesetStatus,
        };
        let mut ruleset = Ruleset::default()
            .handle_access(AccessFs::from_all(ABI::V5))
            .and_then(|ruleset| ruleset.create())
            .map_err(|e| format!("applying the Landlock ruleset: {e}"))?;
        for path in readable {
            let directory = PathFd::new(path)
                .map_err(|e| format!("opening {} for the sandbox: {e}", path.display()))?;
            ruleset = ruleset
                .add_rule(PathBeneath::new(
                    directory,
                    AccessFs::ReadFile | AccessFs::ReadDir,
                ))
                .map_err(|e| format!("letting the converter read {}: {e}", path.display()))?;
        }
        let status = ruleset
            .restrict_self()
            .map_err(|e| format!("applying the Landlock ruleset: {e}"))?;
        status.ruleset != RulesetStatus::NotEnforced
    } else {
        false
    };
    let seccomp = if support.seccomp {
        let program = denylist()?;
        seccompiler::apply_filter(&program)
            .map_err(|e| format!("applying the seccomp filter: {e}"))?;
        true
    } else {
        false
    };
    Ok(Confined {
        no_new_privs,
        landlock,
        seccomp,
    })
}

/// The seccomp program: the calls in [`DENIED`] fail with `EPERM`, every
/// other call is allowed.
fn denylist() -> Result<seccompiler::BpfProgram, String> {
    let arch = seccompiler::TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("no seccomp filter for this architecture: {e}"))?;
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        DENIED.iter().map(|&call| (call, Vec::new())).collect();
    let filter = seccompiler::SeccompFilter::new(
        rules,
        seccompiler::SeccompAction::Allow,
        seccompiler::SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| format!("building the seccomp filter: {e}"))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| format!("compiling the seccomp filter: {e}"))
}

/// System calls a converter never needs and an exploit would.
const DENIED: &[i64] = &[
    // Network and local sockets.
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    // New programs and processes (threads use clone/clone3, still allowed).
    libc::SYS_execve,
    libc::SYS_execveat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_fork,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_vfork,
    // Other processes' memory.
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_getfd,
    // Escapes and kernel attack surface.
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_kexec_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_io_uring_setup,
];

/// Makes the daemon non-dumpable: another process of its user can no longer
/// attach to it, read its memory or its `/proc/<pid>/environ` (children
/// regain dumpability at exec, and are confined by [`confine`] instead).
pub fn make_undumpable() -> bool {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) only sets a flag on this process.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) == 0 }
}

/// What a confined child can still do, for the test of the sandbox:
/// each attempt a parser exploit would make, and whether it worked.
#[derive(Debug, serde::Serialize)]
pub struct Probe {
    pub confined: Confined,
    /// `(attempt, succeeded)`.
    pub attempts: Vec<(String, bool)>,
}

/// Confines this process, then tries what an exploit would (`parent` is the
/// daemon's pid; `readable` a file the daemon can read, e.g. in its state
/// directory).
pub fn probe_confined(parent: u32, readable: &str) -> Result<Probe, String> {
    let confined = confine(&[])?;
    let mut attempts = Vec::new();
    let mut attempt = |what: String, worked: bool| attempts.push((what, worked));
    attempt(
        format!("read /proc/{parent}/environ"),
        std::fs::read(format!("/proc/{parent}/environ")).is_ok(),
    );
    attempt(format!("read {readable}"), std::fs::read(readable).is_ok());
    let scratch = std::env::temp_dir().join(format!("sandbox-probe-{}", std::process::id()));
    let wrote = std::fs::write(&scratch, b"x").is_ok();
    if wrote {
        let _ = std::fs::remove_file(&scratch);
    }
    attempt("write a file in /tmp".into(), wrote);
    // A refused connection still means the socket reached the network.
    let denied = |e: &std::io::Error| e.kind() == std::io::ErrorKind::PermissionDenied;
    attempt(
        "connect to 127.0.0.1:9".into(),
        std::net::TcpStream::connect(("127.0.0.1", 9)).map_or_else(|e| !denied(&e), |_| true),
    );
    attempt(
        "run /bin/true".into(),
        std::process::Command::new("/bin/true").status().is_ok(),
    );
    // SAFETY: PTRACE_ATTACH to another pid only fails or attaches.
    let traced = unsafe {
        libc::ptrace(
            libc::PTRACE_ATTACH,
            parent as libc::pid_t,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    } == 0;
    attempt(format!("ptrace {parent}"), traced);
    Ok(Probe { confined, attempts })
}
