//! Unit tests of the bench's pure parts (no benchmark runs here: `cargo xtask bench` does that).
use super::{agent, phases, report, worker};

#[test]
fn metrics_text_is_parsed_with_labels_and_histograms() {
    let m = agent::Metrics::parse(
        "# HELP guard_events_total Events.\n# TYPE guard_events_total counter\n\
         guard_events_total{kind=\"exec\"} 12\nguard_events_total{kind=\"fork\"} 3\n\
         guard_bpf_program_run_seconds_total{program=\"guard_exec\"} 0.5\nguard_bpf_program_runs_total{program=\"guard_exec\"} 10\n\
         guard_hold_decision_seconds_bucket{decision=\"policy\",le=\"0.001\"} 4\n\
         guard_hold_decision_seconds_bucket{decision=\"policy\",le=\"+Inf\"} 5\nguard_process_table_entries 7\n",
    );
    assert_eq!(m.sum("guard_events_total", &[]), 15.0);
    assert_eq!(m.sum("guard_events_total", &[("kind", "exec")]), 12.0);
    assert_eq!(m.sum("guard_process_table_entries", &[]), 7.0);
    assert_eq!(m.programs()["guard_exec"], (0.5e9, 10.0));
    assert_eq!(m.buckets("guard_hold_decision_seconds", &[("decision", "policy")]), vec![(0.001, 4.0), (f64::INFINITY, 5.0)]);
}

#[test]
fn worker_results_are_read_from_the_last_result_line() {
    let r = agent::parse_result("noise\nbench-result ns=5 bytes=7\n").unwrap();
    assert_eq!((r["ns"], r["bytes"]), (5.0, 7.0));
    assert!(agent::parse_result("nothing here").is_none());
}

#[test]
fn medians_of_odd_and_even_counts() {
    assert_eq!(report::median(&[3.0, 1.0, 2.0]), 2.0);
    assert_eq!(report::median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    assert!(report::median(&[]).is_nan());
}

#[test]
fn the_tiny_executable_is_a_static_elf_with_one_loadable_segment() {
    for sleep in [false, true] {
        let e = worker::tiny_elf(sleep).unwrap();
        assert_eq!(&e[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([e[16], e[17]]), 2, "ET_EXEC");
        assert_eq!(u16::from_le_bytes([e[56], e[57]]), 1, "one program header");
        let filesz = u64::from_le_bytes(e[64 + 32..64 + 40].try_into().unwrap());
        assert_eq!(filesz, e.len() as u64);
    }
}

#[test]
fn scale_policies_have_the_asked_number_of_distinct_entries() {
    for n in phases::SCALE_SIZES {
        let p = phases::scale_policy(n);
        let exec: Vec<&str> = p.lines().filter(|l| l.contains("- path") || l.contains("- basename")).collect();
        let cidrs: Vec<&str> = p.lines().filter(|l| l.contains("- cidr:")).collect();
        assert_eq!(exec.len(), n);
        // One allow (the loopback address the workload connects to) plus n denies.
        assert_eq!(cidrs.len(), n + 1);
        let mut unique = cidrs.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), cidrs.len(), "duplicate prefixes");
        assert!(!cidrs.iter().skip(1).any(|c| c.ends_with(" 127.0.0.1/32")));
    }
}
