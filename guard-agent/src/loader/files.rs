//! Protected paths in the loader: which syscalls the file programs watch (`FILE_SYSCALLS`,
//! from the running kernel's tracefs formats), and attaching the two programs to each of their
//! `sys_enter_*` / `sys_exit_*` tracepoints. A syscall the kernel has no tracepoint for (e.g.
//! `unlink` on arm64, which only has `unlinkat`) is skipped: nothing can make that call.
use std::path::Path;

use aya::{
    Ebpf,
    maps::Array,
    programs::{TracePoint, links::FdLink},
};
use guard_common::{
    FILE_OP_CREATE, FILE_OP_DELETE, FILE_OP_OPEN, FILE_OP_RENAME, FILE_OP_TRUNCATE, FileSyscall, names,
};

use super::{LoadError, pins::Generation, program, tracefs};

/// (syscall, number, op, [(FileSyscall field, tracefs field)], fixed open flags)
type Watched = (&'static str, libc::c_long, u32, &'static [(Arg, &'static str)], u32);

#[derive(Clone, Copy)]
enum Arg {
    Path,
    Path2,
    Dirfd,
    Dirfd2,
    Flags,
    How,
}

const WATCHED: &[Watched] = &[
    ("unlink", libc::SYS_unlink, FILE_OP_DELETE, &[(Arg::Path, "pathname")], 0),
    ("unlinkat", libc::SYS_unlinkat, FILE_OP_DELETE, &[(Arg::Dirfd, "dfd"), (Arg::Path, "pathname"), (Arg::Flags, "flag")], 0),
    ("rmdir", libc::SYS_rmdir, FILE_OP_DELETE, &[(Arg::Path, "pathname")], 0),
    ("rename", libc::SYS_rename, FILE_OP_RENAME, &[(Arg::Path, "oldname"), (Arg::Path2, "newname")], 0),
    ("renameat", libc::SYS_renameat, FILE_OP_RENAME, &[(Arg::Dirfd, "olddfd"), (Arg::Path, "oldname"), (Arg::Dirfd2, "newdfd"), (Arg::Path2, "newname")], 0),
    (
        "renameat2",
        libc::SYS_renameat2,
        FILE_OP_RENAME,
        &[(Arg::Dirfd, "olddfd"), (Arg::Path, "oldname"), (Arg::Dirfd2, "newdfd"), (Arg::Path2, "newname"), (Arg::Flags, "flags")],
        0,
    ),
    ("truncate", libc::SYS_truncate, FILE_OP_TRUNCATE, &[(Arg::Path, "path")], 0),
    ("ftruncate", libc::SYS_ftruncate, FILE_OP_TRUNCATE, &[(Arg::Dirfd, "fd")], 0),
    ("open", libc::SYS_open, FILE_OP_OPEN, &[(Arg::Path, "filename"), (Arg::Flags, "flags")], 0),
    ("openat", libc::SYS_openat, FILE_OP_OPEN, &[(Arg::Dirfd, "dfd"), (Arg::Path, "filename"), (Arg::Flags, "flags")], 0),
    ("openat2", libc::SYS_openat2, FILE_OP_OPEN, &[(Arg::Dirfd, "dfd"), (Arg::Path, "filename"), (Arg::How, "how")], 0),
    ("creat", libc::SYS_creat, FILE_OP_OPEN, &[(Arg::Path, "pathname")], (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u32),
    ("mkdir", libc::SYS_mkdir, FILE_OP_CREATE, &[(Arg::Path, "pathname")], 0),
    ("mkdirat", libc::SYS_mkdirat, FILE_OP_CREATE, &[(Arg::Dirfd, "dfd"), (Arg::Path, "pathname")], 0),
    ("mknod", libc::SYS_mknod, FILE_OP_CREATE, &[(Arg::Path, "filename")], 0),
    ("mknodat", libc::SYS_mknodat, FILE_OP_CREATE, &[(Arg::Dirfd, "dfd"), (Arg::Path, "filename")], 0),
    ("symlink", libc::SYS_symlink, FILE_OP_CREATE, &[(Arg::Path, "newname"), (Arg::Path2, "oldname")], 0),
    ("symlinkat", libc::SYS_symlinkat, FILE_OP_CREATE, &[(Arg::Path2, "oldname"), (Arg::Dirfd, "newdfd"), (Arg::Path, "newname")], 0),
    ("link", libc::SYS_link, FILE_OP_CREATE, &[(Arg::Path, "newname"), (Arg::Path2, "oldname")], 0),
    (
        "linkat",
        libc::SYS_linkat,
        FILE_OP_CREATE,
        &[(Arg::Dirfd2, "olddfd"), (Arg::Path2, "oldname"), (Arg::Dirfd, "newdfd"), (Arg::Path, "newname"), (Arg::Flags, "flags")],
        0,
    ),
];

/// The watched syscalls this kernel has tracepoints for, with their table entries.
fn table(tracefs: &Path) -> Result<Vec<(&'static str, u32, FileSyscall)>, LoadError> {
    let mut out = Vec::new();
    for (name, nr, op, args, fixed) in WATCHED {
        let enter = format!("sys_enter_{name}");
        if !tracefs.join("events/syscalls").join(&enter).exists() || !tracefs.join("events/syscalls").join(format!("sys_exit_{name}")).exists() {
            continue;
        }
        let mut sc = FileSyscall { op: *op, fixed_flags: *fixed, ..FileSyscall::default() };
        for (arg, field) in *args {
            let off = tracefs::field_offset(tracefs, "syscalls", &enter, field).map_err(|source| LoadError::Tracefs { tracepoint: name, source })?;
            match arg {
                Arg::Path => sc.path = off,
                Arg::Path2 => sc.path2 = off,
                Arg::Dirfd => sc.dirfd = off,
                Arg::Dirfd2 => sc.dirfd2 = off,
                Arg::Flags => sc.flags = off,
                Arg::How => sc.how = off,
            }
        }
        out.push((*name, *nr as u32, sc));
    }
    Ok(out)
}

/// Globals of the file programs: where `__syscall_nr` and `ret` are in the records.
pub(super) fn offsets(tracefs: &Path) -> Result<Vec<(&'static str, u32)>, LoadError> {
    let at = |name: &'static str, tp: &str, field: &str| {
        tracefs::field_offset(tracefs, "syscalls", tp, field).map_err(|source| LoadError::Tracefs { tracepoint: name, source })
    };
    Ok(vec![
        (guard_common::globals::FILES_NR, at("syscalls/sys_enter_openat", "sys_enter_openat", "__syscall_nr")?),
        (guard_common::globals::FILES_RET, at("syscalls/sys_exit_openat", "sys_exit_openat", "ret")?),
    ])
}

/// Fills `FILE_SYSCALLS` and attaches both programs to each watched syscall's tracepoints.
/// The first link of each program is pinned under its own name (the generation's
/// completeness check looks for it), the others as `NAME@syscall`.
pub(super) fn attach(ebpf: &mut Ebpf, tracefs: &Path, generation: &Generation) -> Result<(), LoadError> {
    let table = table(tracefs)?;
    {
        let name = names::FILE_SYSCALLS;
        let map = ebpf.map_mut(name).ok_or(LoadError::Missing { kind: "map", name })?;
        let mut map = Array::<_, FileSyscall>::try_from(map).map_err(|source| LoadError::Map { name, source })?;
        for (_, nr, sc) in &table {
            map.set(*nr, sc, 0).map_err(|source| LoadError::MapInsert { name, source })?;
        }
    }
    for (prog_name, kind) in [(names::PROG_FILES_ENTER, "enter"), (names::PROG_FILES_EXIT, "exit")] {
        let prog_err = |source| LoadError::Program { name: prog_name, source };
        let prog: &mut TracePoint = program(ebpf, prog_name)?;
        prog.load().map_err(prog_err)?;
        for (i, (syscall, _, _)) in table.iter().enumerate() {
            let id = prog.attach("syscalls", &format!("sys_{kind}_{syscall}")).map_err(prog_err)?;
            let link = FdLink::try_from(prog.take_link(id).map_err(prog_err)?).map_err(|e| LoadError::PinLink { name: prog_name, source: Box::new(e) })?;
            let pin = if i == 0 { generation.link(prog_name) } else { generation.link(&format!("{prog_name}@{syscall}")) };
            link.pin(pin).map(drop).map_err(|e| LoadError::PinLink { name: prog_name, source: Box::new(e) })?;
        }
    }
    Ok(())
}
