//! Names of the maps and programs in the eBPF object, shared so neither side spells them twice.
pub const EVENTS: &str = "EVENTS";
pub const DROPS: &str = "DROPS";
pub const DROPS_REPORTED: &str = "DROPS_REPORTED";
pub const AGENT_CGROUPS: &str = "AGENT_CGROUPS";
pub const POLICIES: &str = "POLICIES";
pub const EXEC_PATHS: &str = "EXEC_PATHS";
pub const EXEC_NAMES: &str = "EXEC_NAMES";
pub const EXEC_PREFIXES: &str = "EXEC_PREFIXES";
pub const EXEC_NAME_PREFIXES: &str = "EXEC_NAME_PFX";
pub const EXEC_INODES: &str = "EXEC_INODES";
pub const NET_V4: &str = "NET_V4";
pub const NET_V6: &str = "NET_V6";
pub const HELD: &str = "HELD";
pub const HELD_COUNT: &str = "HELD_COUNT";
pub const TAGGED: &str = "TAGGED";

pub const PROG_EXEC: &str = "guard_exec";
/// The `lsm` tier's programs (BPF LSM hooks), attached only where BPF LSM is active.
pub const PROG_LSM_EXEC: &str = "guard_lsm_exec";
pub const PROG_LSM_SOCKET: &str = "guard_lsm_socket";
pub const PROG_LSM_OPEN: &str = "guard_lsm_open";
pub const PROG_CONNECT4: &str = "guard_connect4";
pub const PROG_CONNECT6: &str = "guard_connect6";
pub const PROG_SENDMSG4: &str = "guard_sendmsg4";
pub const PROG_SENDMSG6: &str = "guard_sendmsg6";
pub const PROG_SOCK_CREATE: &str = "guard_sock_create";
pub const PROG_SOCKET_ENTER: &str = "guard_socket_enter";
pub const PROG_FORK: &str = "guard_fork";
pub const PROG_EXIT: &str = "guard_exit";
pub const PROG_GATE: &str = "guard_gate";
pub const PROG_ATTACH: &str = "guard_attach";
pub const PROG_MKDIR: &str = "guard_cgroup_mkdir";
pub const PROG_RMDIR: &str = "guard_cgroup_rmdir";

pub const EXFIL: &str = "EXFIL";
pub const SOCK_OWNER: &str = "SOCK_OWNER";
pub const BUDGETS: &str = "BUDGETS";
pub const BUDGET_EXEMPT_V4: &str = "BUDGET_EXEMPT4";
pub const BUDGET_EXEMPT_V6: &str = "BUDGET_EXEMPT6";
pub const SENSITIVE: &str = "SENSITIVE";
pub const TAINT: &str = "TAINT";
pub const DNS_BLOCKED: &str = "DNS_BLOCKED";

pub const PROG_EGRESS: &str = "guard_egress";
pub const PROG_INGRESS: &str = "guard_ingress";
pub const PROG_OPENAT: &str = "guard_openat";
pub const PROG_OPENAT2: &str = "guard_openat2";
pub const PROG_OPEN: &str = "guard_open";

pub const FILE_SYSCALLS: &str = "FILE_SYSCALLS";
pub const FILE_PENDING: &str = "FILE_PENDING";
pub const PROG_FILES_ENTER: &str = "guard_files_enter";
pub const PROG_FILES_EXIT: &str = "guard_files_exit";
pub const DELETE_BUDGETS: &str = "DELETE_BUDGETS";
pub const DELETE_COUNTS: &str = "DELETE_COUNTS";
pub const PROG_UNLINK_ENTER: &str = "guard_unlink_enter";
pub const PROG_UNLINKAT_ENTER: &str = "guard_unlinkat_enter";
pub const PROG_RMDIR_ENTER: &str = "guard_rmdir_enter";
pub const PROG_UNLINK_EXIT: &str = "guard_unlink_exit";
pub const PROG_UNLINKAT_EXIT: &str = "guard_unlinkat_exit";
pub const PROG_RMDIR_EXIT: &str = "guard_rmdir_exit";
