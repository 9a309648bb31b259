//! Names of the globals the loader fills in from the running kernel (tracefs formats and BTF).
//! A value of 0 for an offset means "not resolved": the program then leaves that field 0.
/// Offset of `__data_loc char[] filename` in the `sched_process_exec` record.
pub const EXEC_FILENAME_LOC: &str = "EXEC_FILENAME_LOC";
/// Offsets in the `cgroup/cgroup_attach_task` record.
pub const ATTACH_ROOT: &str = "ATTACH_ROOT";
pub const ATTACH_ID: &str = "ATTACH_ID";
pub const ATTACH_PID: &str = "ATTACH_PID";
pub const ATTACH_PATH_LOC: &str = "ATTACH_PATH_LOC";
/// Offsets in the `cgroup/cgroup_mkdir` and `cgroup/cgroup_rmdir` records (one format).
pub const CGROUP_EV_ROOT: &str = "CGROUP_EV_ROOT";
pub const CGROUP_EV_ID: &str = "CGROUP_EV_ID";
pub const CGROUP_EV_PATH_LOC: &str = "CGROUP_EV_PATH_LOC";
/// Non-zero: execs outside agent workloads are reported too (policy id 0, never enforced).
pub const OBSERVE_ALL_EXECS: &str = "OBSERVE_ALL_EXECS";
/// Offsets of `family`, `type`, `protocol` in the `sys_enter_socket` record.
pub const SOCKET_FAMILY: &str = "SOCKET_FAMILY";
pub const SOCKET_TYPE: &str = "SOCKET_TYPE";
pub const SOCKET_PROTOCOL: &str = "SOCKET_PROTOCOL";
pub const TASK_REAL_PARENT: &str = "TASK_REAL_PARENT";
pub const TASK_TGID: &str = "TASK_TGID";
pub const TASK_PID: &str = "TASK_PID";
pub const TASK_CRED: &str = "TASK_CRED";
pub const CRED_EUID: &str = "CRED_EUID";
pub const TASK_LOGINUID: &str = "TASK_LOGINUID";
pub const TASK_FS: &str = "TASK_FS";
/// `fs_struct.pwd` + `path.dentry` / `path.mnt`; `fs_struct.root` + `path.mnt`.
pub const FS_PWD_DENTRY: &str = "FS_PWD_DENTRY";
pub const FS_PWD_MNT: &str = "FS_PWD_MNT";
pub const FS_ROOT_MNT: &str = "FS_ROOT_MNT";
pub const MM_ARG_START: &str = "MM_ARG_START";
pub const MM_ARG_END: &str = "MM_ARG_END";
pub const TASK_EXIT_CODE: &str = "TASK_EXIT_CODE";
pub const TASK_CGROUPS: &str = "TASK_CGROUPS";
pub const CSS_SET_DFL_CGRP: &str = "CSS_SET_DFL_CGRP";
pub const CGROUP_KN: &str = "CGROUP_KN";
pub const KERNFS_NODE_NAME: &str = "KERNFS_NODE_NAME";
pub const TASK_MM: &str = "TASK_MM";
pub const MM_EXE_FILE: &str = "MM_EXE_FILE";
/// `file.f_path` + `path.dentry`.
pub const FILE_DENTRY: &str = "FILE_DENTRY";
pub const BPRM_FILENAME: &str = "BPRM_FILENAME";
pub const BPRM_FILE: &str = "BPRM_FILE";
/// Non-zero when the BPF LSM programs are attached (the `lsm` tier): packet sockets are then
/// refused by `lsm/socket_create`, not killed at `sys_enter_socket`.
pub const LSM_TIER: &str = "LSM_TIER";
/// `dentry.d_name` + `qstr.name`.
pub const DENTRY_NAME: &str = "DENTRY_NAME";
pub const DENTRY_PARENT: &str = "DENTRY_PARENT";
pub const DENTRY_INODE: &str = "DENTRY_INODE";
pub const INODE_INO: &str = "INODE_INO";
pub const INODE_SB: &str = "INODE_SB";
pub const SB_DEV: &str = "SB_DEV";
/// Offsets of `dfd`, `filename` and `flags` in the `sys_enter_openat` record, and of
/// `dfd`, `filename` in `sys_enter_openat2` and `filename`, `flags` in `sys_enter_open`.
pub const OPENAT_DFD: &str = "OPENAT_DFD";
pub const OPENAT_FILENAME: &str = "OPENAT_FILENAME";
pub const OPENAT_FLAGS: &str = "OPENAT_FLAGS";
pub const OPENAT2_DFD: &str = "OPENAT2_DFD";
pub const OPENAT2_FILENAME: &str = "OPENAT2_FILENAME";
pub const OPEN_FILENAME: &str = "OPEN_FILENAME";
pub const OPEN_FLAGS: &str = "OPEN_FLAGS";
/// Protected paths: `__syscall_nr` in the `syscalls/sys_enter_*` and `sys_exit_*` records, and
/// `ret` in `sys_exit_*`.
pub const FILES_NR: &str = "FILES_NR";
pub const FILES_RET: &str = "FILES_RET";
/// `task_struct.files`, `files_struct.fdt`, `fdtable.fd`, and `file.f_path` + `path.mnt`.
pub const TASK_FILES: &str = "TASK_FILES";
pub const FILES_FDT: &str = "FILES_FDT";
pub const FDT_FD: &str = "FDT_FD";
pub const FILE_MNT: &str = "FILE_MNT";
/// Offsets of `pathname` in `sys_enter_unlink` and `sys_enter_rmdir`, of `dfd` and `pathname`
/// in `sys_enter_unlinkat`, and of `ret` in their `sys_exit_*` records (one format).
pub const UNLINK_PATHNAME: &str = "UNLINK_PATHNAME";
pub const UNLINKAT_DFD: &str = "UNLINKAT_DFD";
pub const UNLINKAT_PATHNAME: &str = "UNLINKAT_PATHNAME";
pub const RMDIR_PATHNAME: &str = "RMDIR_PATHNAME";
pub const SYS_EXIT_RET: &str = "SYS_EXIT_RET";
/// `fdtable.max_fds`: bounds an `unlinkat` dirfd (with `TASK_FILES`, `FILES_FDT`, `FDT_FD`).
pub const FDT_MAX_FDS: &str = "FDT_MAX_FDS";
