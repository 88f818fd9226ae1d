//! What the scenarios report and where it goes: statistics of their measurements (median,
//! quantile), the formatting they share, and the BENCHMARKS.md blocks a `--write` run
//! replaces.

use std::fmt::Write as _;
use std::path::Path;

pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The `p` quantile (nearest rank) of sorted `v`.
pub fn quantile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn kreq(x: f64) -> String {
    format!("{:.1}k", x / 1000.0)
}

/// One cell per thread count of a ratio row: the median of the per-round ratios in bold,
/// then the rounds' min–max in brackets. Sorts each `v`.
pub fn ratio_cells(ratios: &mut [Vec<f64>]) -> Vec<String> {
    ratios
        .iter_mut()
        .map(|v| {
            let m = median(v);
            let (lo, hi) = (v[0], v[v.len() - 1]);
            format!("**{m:.3}** ({lo:.3}–{hi:.3})")
        })
        .collect()
}

// ------------------------------------------------------------------------------------------
// The run's files

/// The summary section of a run of all scenarios: one line per scenario, and the run's time.
pub fn summary(headline: &[String], total: f64, quick: bool) -> String {
    let mut md = String::new();
    for l in headline {
        let _ = writeln!(md, "- {l}");
    }
    let _ = writeln!(
        md,
        "\nWhole run: {total:.0} s{}.",
        if quick {
            " (--quick: numbers not meaningful)"
        } else {
            ""
        }
    );
    md
}

/// Writes every section to `results.md` in `out_dir`.
pub fn write_results_md(sections: &[(String, String)], out_dir: &Path) {
    let mut all = String::new();
    for (name, md) in sections {
        let _ = writeln!(all, "<!-- {name} -->\n{md}\n");
    }
    std::fs::write(out_dir.join("results.md"), &all).expect("write results.md");
    println!("wrote {}", out_dir.join("results.md").display());
}

// ------------------------------------------------------------------------------------------
// BENCHMARKS.md

/// Replaces each `<!-- bench:NAME -->` … `<!-- /bench:NAME -->` block in BENCHMARKS.md with
/// this run's section, and copies the storm plot to docs/storm.svg.
pub fn write_benchmarks_md(sections: &[(String, String)], out_dir: &std::path::Path) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("BENCHMARKS.md");
    let Ok(mut doc) = std::fs::read_to_string(&path) else {
        eprintln!("--write: no BENCHMARKS.md at {}", path.display());
        return;
    };
    for (name, md) in sections {
        let (open, close) = (
            format!("<!-- bench:{name} -->"),
            format!("<!-- /bench:{name} -->"),
        );
        match (doc.find(&open), doc.find(&close)) {
            (Some(a), Some(b)) if a < b => {
                doc.replace_range(a + open.len()..b, &format!("\n{md}\n"));
            }
            _ => eprintln!("--write: BENCHMARKS.md has no {open} … {close} block"),
        }
    }
    std::fs::write(&path, doc).expect("write BENCHMARKS.md");
    println!("updated {}", path.display());
    if sections.iter().any(|s| s.0 == "storm") {
        std::fs::create_dir_all(root.join("docs")).expect("create docs/");
        std::fs::copy(out_dir.join("storm.svg"), root.join("docs/storm.svg"))
            .expect("copy storm.svg");
        println!("updated {}", root.join("docs/storm.svg").display());
    }
}
