//! The kernel struct offsets the programs read, from the running kernel's BTF, handed to them
//! as load-time constants.
use guard_common::globals;

use super::btf;
use crate::paths;

/// Offsets of the kernel struct fields the programs read, from the running kernel's BTF. A field
/// that cannot be resolved is left 0 and the programs skip it; say what that costs.
pub(super) fn kernel_offsets() -> Vec<(&'static str, u32)> {
    const PARENT: &str = "exec verdicts lack the parent pid";
    const CGROUP: &str = "exec verdicts may lack the cgroup path";
    const EXE: &str = "basename rules match only the invoked name, and path rules only the filename \
                       (not the executed file's identity, so links to denied binaries are not caught)";
    const IDENTITY: &str = "links to denied binaries and binaries under denied directories reached by \
                            another path are not caught";
    /// (global, the members whose offsets add up to it, what is lost without it)
    const LINEAGE: &str = "forks and exits are not reported: verdicts' ancestry may be incomplete";
    const DETAILS: &str = "exec verdicts lack this detail (euid, login uid, cwd or argv)";
    const FILES: &str = "denied file calls relative to a directory descriptor may be reported without their full path";
    const DELETES: &str = "deletion budget verdicts lack the directory of an unlinkat relative to a dirfd";
    const BPRM: &str = "the lsm tier cannot read the exec it judges: it denies nothing (sched_process_exec still kills)";
    const FIELDS: [(&str, &[(&str, &str)], &str); 33] = [
        (globals::BPRM_FILENAME, &[("linux_binprm", "filename")], BPRM),
        (globals::BPRM_FILE, &[("linux_binprm", "file")], BPRM),
        (globals::TASK_REAL_PARENT, &[("task_struct", "real_parent")], PARENT),
        (globals::TASK_TGID, &[("task_struct", "tgid")], PARENT),
        (globals::TASK_PID, &[("task_struct", "pid")], LINEAGE),
        (globals::TASK_EXIT_CODE, &[("task_struct", "exit_code")], LINEAGE),
        (globals::TASK_CGROUPS, &[("task_struct", "cgroups")], CGROUP),
        (globals::CSS_SET_DFL_CGRP, &[("css_set", "dfl_cgrp")], CGROUP),
        (globals::CGROUP_KN, &[("cgroup", "kn")], CGROUP),
        (globals::KERNFS_NODE_NAME, &[("kernfs_node", "name")], CGROUP),
        (globals::TASK_MM, &[("task_struct", "mm")], EXE),
        (globals::MM_EXE_FILE, &[("mm_struct", "exe_file")], EXE),
        (globals::FILE_DENTRY, &[("file", "f_path"), ("path", "dentry")], EXE),
        (globals::DENTRY_NAME, &[("dentry", "d_name"), ("qstr", "name")], EXE),
        (globals::DENTRY_PARENT, &[("dentry", "d_parent")], IDENTITY),
        (globals::DENTRY_INODE, &[("dentry", "d_inode")], IDENTITY),
        (globals::INODE_INO, &[("inode", "i_ino")], IDENTITY),
        (globals::INODE_SB, &[("inode", "i_sb")], IDENTITY),
        (globals::SB_DEV, &[("super_block", "s_dev")], IDENTITY),
        (globals::TASK_CRED, &[("task_struct", "cred")], DETAILS),
        (globals::CRED_EUID, &[("cred", "euid")], DETAILS),
        (globals::TASK_LOGINUID, &[("task_struct", "loginuid")], DETAILS),
        (globals::TASK_FS, &[("task_struct", "fs")], DETAILS),
        (globals::FS_PWD_DENTRY, &[("fs_struct", "pwd"), ("path", "dentry")], DETAILS),
        (globals::FS_PWD_MNT, &[("fs_struct", "pwd"), ("path", "mnt")], DETAILS),
        (globals::FS_ROOT_MNT, &[("fs_struct", "root"), ("path", "mnt")], DETAILS),
        (globals::MM_ARG_START, &[("mm_struct", "arg_start")], DETAILS),
        (globals::MM_ARG_END, &[("mm_struct", "arg_end")], DETAILS),
        (globals::TASK_FILES, &[("task_struct", "files")], FILES),
        (globals::FILES_FDT, &[("files_struct", "fdt")], FILES),
        (globals::FDT_FD, &[("fdtable", "fd")], FILES),
        (globals::FILE_MNT, &[("file", "f_path"), ("path", "mnt")], FILES),
        (globals::FDT_MAX_FDS, &[("fdtable", "max_fds")], DELETES),
    ];
    let btf = match btf::Btf::from_file(paths::VMLINUX_BTF) {
        Ok(btf) => Some(btf),
        Err(e) => {
            tracing::warn!(error = %e, "no kernel BTF: kernel struct fields cannot be read");
            None
        }
    };
    FIELDS
        .iter()
        .map(|(global, members, cost)| {
            let off = members.iter().try_fold(0u32, |sum, (ty, field)| {
                let off = btf.as_ref().and_then(|b| b.member_offset(ty, field));
                if off.is_none() {
                    tracing::warn!("kernel field {ty}.{field} not found in BTF: {cost}");
                }
                Some(sum + off?)
            });
            (*global, off.unwrap_or(0))
        })
        .collect()
}
