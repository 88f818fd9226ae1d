//! The storm's plot, drawn by the storm scenario and, from its CSV, by `--plot`.

use std::fmt::Write as _;

/// A log–log line chart of storm completion time vs N, one line per contender, plus the
/// 1.5 × ideal target.
pub fn storm_svg(series: &[(String, Vec<(usize, f64)>)]) -> String {
    let f = Frame::new(series);
    let (w, h) = (f.w, f.h);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"13\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">Refresh storm: time until the last of N requests completes (log-log)</text>\n",
        w / 2.0
    );
    grid(&mut s, &f);
    target(&mut s, &f, series);
    lines(&mut s, &f, series);
    legend(&mut s, &f, series);
    s
}

const COLORS: [&str; 4] = ["#555555", "#1f77b4", "#d62728", "#ff7f0e"];

/// The chart's geometry: the SVG's size, the plot area, the Ns on the x axis and the axes'
/// ranges (log2 of N, log10 of ms).
struct Frame {
    w: f64,
    h: f64,
    left: f64,
    top: f64,
    pw: f64,
    ph: f64,
    ns: Vec<usize>,
    xlo: f64,
    xhi: f64,
    ylo: f64,
    yhi: f64,
}

impl Frame {
    fn new(series: &[(String, Vec<(usize, f64)>)]) -> Frame {
        let (w, h) = (760.0, 460.0);
        let (left, right, top, bottom) = (80.0, 200.0, 40.0, 60.0);
        let pw = w - left - right;
        let ph = h - top - bottom;
        let all: Vec<f64> = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.1))
            .collect();
        let lo = all.iter().copied().fold(f64::INFINITY, f64::min).max(0.1);
        let hi = all.iter().copied().fold(0.0, f64::max).max(lo * 10.0);
        let (ylo, yhi) = (lo.log10().floor(), hi.log10().ceil());
        let ns: Vec<usize> = series[0].1.iter().map(|p| p.0).collect();
        let (xlo, xhi) = (
            (*ns.first().unwrap() as f64).log2(),
            (*ns.last().unwrap() as f64).log2(),
        );
        Frame {
            w,
            h,
            left,
            top,
            pw,
            ph,
            ns,
            xlo,
            xhi,
            ylo,
            yhi,
        }
    }

    /// The x coordinate of N = `n`.
    fn x(&self, n: f64) -> f64 {
        let Frame {
            left, pw, xlo, xhi, ..
        } = *self;
        left + (n.log2() - xlo) / (xhi - xlo).max(1.0) * pw
    }

    /// The y coordinate of `ms`.
    fn y(&self, ms: f64) -> f64 {
        let Frame {
            top, ph, ylo, yhi, ..
        } = *self;
        top + ph - (ms.max(0.1).log10() - ylo) / (yhi - ylo) * ph
    }
}

/// Grid and axes.
fn grid(s: &mut String, f: &Frame) {
    let Frame {
        h,
        left,
        top,
        pw,
        ph,
        ylo,
        yhi,
        ..
    } = *f;
    let mut e = ylo as i32;
    while e <= yhi as i32 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(e);
            if v.log10() > yhi + 1e-9 {
                continue;
            }
            let yy = f.y(v);
            let major = m == 1.0;
            let _ = writeln!(
                s,
                "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"{}\"/>",
                left + pw,
                if major { "#cccccc" } else { "#eeeeee" }
            );
            let label = if v >= 1000.0 {
                format!("{} s", v / 1000.0)
            } else {
                format!("{v} ms")
            };
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#444\">{label}</text>",
                left - 6.0,
                yy + 4.0
            );
        }
        e += 1;
    }
    for &n in &f.ns {
        let xx = f.x(n as f64);
        let _ = writeln!(
            s,
            "<line x1=\"{xx:.1}\" y1=\"{top}\" x2=\"{xx:.1}\" y2=\"{:.1}\" stroke=\"#eeeeee\"/>\n<text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#444\">{n}</text>",
            top + ph,
            top + ph + 18.0
        );
    }
    let _ = writeln!(
        s,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#888\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">N threads (released together, token rejected with 401, token endpoint 50 ms)</text>\n<text transform=\"translate(18 {:.1}) rotate(-90)\" text-anchor=\"middle\">completion time</text>",
        left + pw / 2.0,
        h - 18.0,
        top + ph / 2.0
    );
}

/// Target: 1.5 × ideal.
fn target(s: &mut String, f: &Frame, series: &[(String, Vec<(usize, f64)>)]) {
    let target: Vec<String> = series[0]
        .1
        .iter()
        .map(|&(n, ms)| format!("{:.1},{:.1}", f.x(n as f64), f.y(ms * 1.5)))
        .collect();
    let _ = writeln!(
        s,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#2ca02c\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>",
        target.join(" ")
    );
}

/// One line per contender, with a marker at each N.
fn lines(s: &mut String, f: &Frame, series: &[(String, Vec<(usize, f64)>)]) {
    // Lines that nearly coincide stay visible: earlier series are drawn wider underneath,
    // AuthClient (the second series) last and on top, with square markers for the others.
    let mut order: Vec<usize> = (0..series.len()).filter(|&i| i != 1).collect();
    order.push(1);
    for (rank, &i) in order.iter().enumerate() {
        let (name, pts) = &series[i];
        let c = COLORS[i % COLORS.len()];
        let width = if i == 1 { 2.0 } else { 5.0 - rank as f64 };
        let line: Vec<String> = pts
            .iter()
            .map(|&(n, ms)| format!("{:.1},{:.1}", f.x(n as f64), f.y(ms)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"{width}\" stroke-opacity=\"0.85\"/>",
            line.join(" ")
        );
        for &(n, ms) in pts {
            let (cx, cy) = (f.x(n as f64), f.y(ms));
            let title = format!("<title>{name}, N={n}: {ms:.1} ms</title>");
            let _ = if i == 1 {
                writeln!(
                    s,
                    "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"4\" fill=\"{c}\">{title}</circle>"
                )
            } else {
                writeln!(
                    s,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"9\" height=\"9\" fill=\"{c}\">{title}</rect>",
                    cx - 4.5,
                    cy - 4.5
                )
            };
        }
    }
}

/// The legend: each contender, then the target.
fn legend(s: &mut String, f: &Frame, series: &[(String, Vec<(usize, f64)>)]) {
    let Frame { left, top, pw, .. } = *f;
    for (i, (name, _)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let ly = top + 10.0 + i as f64 * 22.0;
        let lx = left + pw + 16.0;
        let _ = writeln!(
            s,
            "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{c}\" stroke-width=\"2.5\"/><text x=\"{}\" y=\"{}\">{name}</text>",
            lx + 24.0,
            lx + 30.0,
            ly + 4.0
        );
    }
    let ly = top + 10.0 + series.len() as f64 * 22.0;
    let lx = left + pw + 16.0;
    let _ = writeln!(
        s,
        "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"#2ca02c\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/><text x=\"{}\" y=\"{}\">target: 1.5 × ideal</text>\n</svg>",
        lx + 24.0,
        lx + 30.0,
        ly + 4.0
    );
}

/// `--plot CSV SVG`: redraws the storm plot from a storm.csv the bench wrote.
pub fn replot(args: &[String]) {
    let [csv, svg] = args else {
        eprintln!("usage: --plot STORM_CSV OUT_SVG");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(csv).expect("read storm csv");
    let mut series: Vec<(String, Vec<(usize, f64)>)> = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (n, name, ms) = (f[0].parse().expect("n"), f[1], f[3].parse().expect("ms"));
        match series.iter_mut().find(|s| s.0 == name) {
            Some(s) => s.1.push((n, ms)),
            None => series.push((name.to_owned(), vec![(n, ms)])),
        }
    }
    std::fs::write(svg, storm_svg(&series)).expect("write svg");
}
