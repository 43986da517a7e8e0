//! `version::compare` against the real tools, each batched into one process
//! (dpkg: one `sh` running `dpkg --compare-versions` per pair). Pairs are
//! generated deterministically (seeded PRNG) from realistic versions and
//! their mutations, invalid ones included: a version the tool rejects must be
//! `None` here, and every other pair must order the same way.
//!
//! The oracles are Debian 12 packages: `dpkg`, `rpm`, `python3-packaging`,
//! `nodejs` + `npm` (node's `semver`), `maven` (`maven-artifact` jar) with a
//! JRE, `ruby`. A missing oracle fails the test, saying what to install.

use std::cmp::Ordering;
use std::io::Write;
use std::process::{Command, Stdio};

use berth_scanner::version::{Scheme, compare};

/// splitmix64: tiny, deterministic, good enough to draw test cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

/// Runs `program args` with `input` on stdin; panics with what to install
/// when the program cannot be started or fails.
fn run(program: &str, args: &[&str], input: &str, install: &str) -> String {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("oracle `{program}` cannot start ({e}); install {install}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("oracle output");
    writer.join().expect("writer").expect("write to oracle");
    assert!(
        out.status.success(),
        "oracle `{program}` failed ({}); install {install}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 oracle output")
}

/// Compares our answers with the oracle's, one line per pair: `<`, `=`,
/// `>` or `X` (rejected). Returns the number of pairs checked.
fn check(scheme: Scheme, pairs: &[(String, String)], oracle: &str) -> usize {
    let lines: Vec<&str> = oracle.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        pairs.len(),
        "oracle answered {} of {} pairs",
        lines.len(),
        pairs.len()
    );
    let mut mismatches = Vec::new();
    let mut rejected = 0;
    for ((a, b), line) in pairs.iter().zip(&lines) {
        let want = match line.trim() {
            "<" => Some(Ordering::Less),
            "=" => Some(Ordering::Equal),
            ">" => Some(Ordering::Greater),
            "X" => None,
            other => panic!("oracle said {other:?} for {a:?} {b:?}"),
        };
        rejected += usize::from(want.is_none());
        let got = compare(scheme, a, b);
        if got != want {
            mismatches.push(format!("{a:?} vs {b:?}: oracle {want:?}, ours {got:?}"));
        }
    }
    eprintln!(
        "{scheme:?}: {} pairs checked ({rejected} with a rejected version), {} mismatches",
        pairs.len(),
        mismatches.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    pairs.len()
}

/// Pairs of `n` versions: half of them a version and its own mutation
/// (close calls), the rest two independent draws.
fn pairs(
    rng: &mut Rng,
    n: usize,
    mut draw: impl FnMut(&mut Rng) -> String,
    mutate: impl Fn(&mut Rng, &str) -> String,
) -> Vec<(String, String)> {
    (0..n)
        .map(|_| {
            let a = draw(rng);
            let b = if rng.chance(50) {
                mutate(rng, &a)
            } else {
                draw(rng)
            };
            if rng.chance(50) { (a, b) } else { (b, a) }
        })
        .collect()
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Replaces one digit of `s` by a random digit, or a digit run by itself
/// with a leading zero.
fn mutate_digits(rng: &mut Rng, s: &str) -> String {
    let digits: Vec<usize> = s
        .char_indices()
        .filter(|(_, c)| c.is_ascii_digit())
        .map(|(i, _)| i)
        .collect();
    if digits.is_empty() {
        return format!("{s}0");
    }
    let i = digits[rng.below(digits.len())];
    let mut out = s.to_owned();
    if rng.chance(30) {
        out.insert(i, '0');
    } else {
        let d = char::from(b'0' + rng.below(10) as u8);
        out.replace_range(i..i + 1, &d.to_string());
    }
    out
}

// ---------------------------------------------------------------- dpkg

const DPKG_SEEDS: &str = include_str!("data/dpkg-versions.txt");

fn dpkg_mutate(rng: &mut Rng, v: &str) -> String {
    let suffixes = [
        "~rc1",
        "~",
        "~~",
        "+b1",
        "+b2",
        "+deb12u1",
        "~deb12u1",
        "~bpo11+1",
        "a",
        "b",
        ".0",
        ".1",
        "+1",
        "+",
        "-1",
        "-0",
        "1",
        "+really1.0",
        "~git20230101",
    ];
    match rng.below(12) {
        0 | 1 => mutate_digits(rng, v),
        2..=4 => format!("{v}{}", rng.pick(&suffixes)),
        5 => format!("{}:{v}", rng.pick(&["0", "1", "2", "01", "10"])),
        6 => {
            // Drop the revision, or change it.
            match v.rfind('-') {
                Some(h) if rng.chance(50) => v[..h].to_owned(),
                Some(h) => format!(
                    "{}-{}",
                    &v[..h],
                    rng.pick(&["1", "0", "2", "1.1", "1+b1", "0ubuntu1", "a"])
                ),
                None => format!("{v}-{}", rng.pick(&["1", "0", "1~bpo1"])),
            }
        }
        7 => {
            let mut cut = rng.below(v.len().max(1)).max(1);
            while !v.is_char_boundary(cut) {
                cut -= 1;
            }
            v[..cut].to_owned()
        }
        8 => {
            // Mostly invalid for dpkg: errors and warnings alike.
            let bad = ["-", ":", " x", "_1", "!", "-", "é"];
            let b = rng.pick(&bad);
            if rng.chance(50) {
                format!("{v}{b}")
            } else {
                format!("{b}{v}")
            }
        }
        9 => v.to_uppercase(),
        10 => v.replacen('.', "~", 1),
        _ => v.replacen('-', "+", 1),
    }
}

#[test]
fn dpkg_matches_dpkg_compare_versions() {
    let seeds: Vec<&str> = DPKG_SEEDS.lines().filter(|l| !l.is_empty()).collect();
    let mut rng = Rng(0x0d9c_5eed);
    let mut pairs = pairs(
        &mut rng,
        2000,
        |r| {
            let v = r.pick(&seeds).to_owned();
            if r.chance(40) { dpkg_mutate(r, &v) } else { v }
        },
        dpkg_mutate,
    );
    // dpkg treats an empty argument as the blank version; we refuse it.
    pairs.retain(|(a, b)| !a.trim().is_empty() && !b.trim().is_empty());
    let mut script = String::from(
        "c() { dpkg --compare-versions -- \"$1\" lt \"$2\" 2>/dev/null; r=$?\n\
         if [ $r = 0 ]; then echo '<'; elif [ $r = 1 ]; then\n\
         if dpkg --compare-versions -- \"$1\" gt \"$2\" 2>/dev/null; then echo '>'; else echo '='; fi\n\
         else echo X; fi; }\n",
    );
    for (a, b) in &pairs {
        script.push_str(&format!("c {} {}\n", sh_quote(a), sh_quote(b)));
    }
    let out = run("sh", &[], &script, "the `dpkg` package");
    assert!(check(Scheme::Dpkg, &pairs, &out) >= 1900);
}

// ---------------------------------------------------------------- SemVer

fn semver_number(rng: &mut Rng) -> String {
    if rng.chance(5) {
        return rng.pick(&["00", "01", "x", ""]).to_owned();
    }
    rng.pick(&["0", "1", "2", "3", "10", "11", "99", "123456789"])
        .to_owned()
}

fn semver_ident(rng: &mut Rng) -> String {
    if rng.chance(10) {
        return rng.pick(&["01", "", "é", "a_b", "00"]).to_owned();
    }
    rng.pick(&[
        "alpha", "beta", "rc", "0", "1", "2", "11", "x-y", "a1", "1a", "-", "A", "pre", "SNAPSHOT",
        "z", "0-0", "10", "9",
    ])
    .to_owned()
}

fn semver_draw(rng: &mut Rng) -> String {
    let mut v = format!(
        "{}.{}.{}",
        semver_number(rng),
        semver_number(rng),
        semver_number(rng)
    );
    if rng.chance(2) {
        v = format!("{}.{}", semver_number(rng), semver_number(rng));
    }
    if rng.chance(55) {
        let n = 1 + rng.below(3);
        let ids: Vec<String> = (0..n).map(|_| semver_ident(rng)).collect();
        v = format!("{v}-{}", ids.join("."));
    }
    if rng.chance(20) {
        v = format!(
            "{v}+{}",
            rng.pick(&["build", "1", "001", "a.b", "sha.5114f85", "b-2", "x_y"])
        );
    }
    v
}

fn semver_mutate(rng: &mut Rng, v: &str) -> String {
    match rng.below(5) {
        0 | 1 => mutate_digits(rng, v),
        2 => match v.split_once('-') {
            Some((core, _)) => core.to_owned(),
            None => format!("{v}-{}", semver_ident(rng)),
        },
        3 => format!("{v}.{}", semver_ident(rng)),
        _ => match v.split_once('+') {
            Some((rest, _)) => rest.to_owned(),
            None => format!("{v}+b{}", rng.below(3)),
        },
    }
}

const NODE_SEMVER: &str = r#"
let semver;
for (const p of [process.env.NODE_SEMVER, '/usr/share/nodejs/semver', '/usr/lib/node_modules/npm/node_modules/semver', 'semver']) {
  if (!p) continue;
  try { semver = require(p); break; } catch (e) {}
}
if (!semver) { console.error('node semver module not found'); process.exit(3); }
const lines = require('fs').readFileSync(0, 'utf8').split('\n');
const out = [];
for (const line of lines) {
  if (line === '') continue;
  const [a, b] = line.split('\t');
  const pa = semver.parse(a), pb = semver.parse(b);
  if (pa === null || pb === null) { out.push('X'); continue; }
  out.push(['<', '=', '>'][semver.compare(pa, pb) + 1]);
}
process.stdout.write(out.join('\n') + '\n');
"#;

#[test]
fn semver_matches_node_semver() {
    let mut rng = Rng(0x5e3e_5eed);
    let pairs = pairs(&mut rng, 4000, semver_draw, semver_mutate);
    let input: String = pairs.iter().map(|(a, b)| format!("{a}\t{b}\n")).collect();
    let out = run(
        "node",
        &["-e", NODE_SEMVER],
        &input,
        "the `nodejs` and `npm` packages (node's semver module)",
    );
    assert_eq!(check(Scheme::Semver, &pairs, &out), 4000);
}

// ---------------------------------------------------------------- PEP 440

fn pep440_draw(rng: &mut Rng) -> String {
    let mut v = String::new();
    if rng.chance(8) {
        v.push_str(rng.pick(&["1!", "0!", "2!", "01!"]));
    }
    if rng.chance(4) {
        v.push_str(rng.pick(&["v", "V", " "]));
    }
    let parts = 1 + rng.below(4);
    let release: Vec<&str> = (0..parts)
        .map(|_| rng.pick(&["0", "1", "2", "10", "00", "01", "3"]))
        .collect();
    v.push_str(&release.join("."));
    let seps = ["", "", "", ".", "-", "_"];
    if rng.chance(40) {
        v.push_str(rng.pick(&seps));
        v.push_str(rng.pick(&[
            "a", "b", "rc", "c", "alpha", "beta", "pre", "preview", "RC", "Alpha",
        ]));
        v.push_str(rng.pick(&seps));
        v.push_str(rng.pick(&["", "0", "1", "2", "11"]));
    }
    if rng.chance(30) {
        if rng.chance(25) {
            v.push_str(rng.pick(&["-1", "-0", "-2"]));
        } else {
            v.push_str(rng.pick(&seps));
            v.push_str(rng.pick(&["post", "rev", "r", "POST"]));
            v.push_str(rng.pick(&seps));
            v.push_str(rng.pick(&["", "0", "1", "3"]));
        }
    }
    if rng.chance(30) {
        v.push_str(rng.pick(&seps));
        v.push_str(rng.pick(&["dev", "DEV"]));
        v.push_str(rng.pick(&seps));
        v.push_str(rng.pick(&["", "0", "1", "5"]));
    }
    if rng.chance(20) {
        v.push('+');
        let n = 1 + rng.below(3);
        let segs: Vec<&str> = (0..n)
            .map(|_| {
                rng.pick(&[
                    "ubuntu", "1", "2", "abc", "ABC", "10", "01", "cpu", "cu118", "",
                ])
            })
            .collect();
        v.push_str(&segs.join(rng.pick(&[".", "-", "_"])));
    }
    if rng.chance(5) {
        v.push_str(rng.pick(&[" ", "\u{b}", "x", ".", "-", "!", "+"]));
    }
    v
}

fn pep440_mutate(rng: &mut Rng, v: &str) -> String {
    match rng.below(4) {
        0 | 1 => mutate_digits(rng, v),
        2 => format!(
            "{v}{}",
            rng.pick(&[".0", ".post1", ".dev0", "a1", "+local", "-1", "rc1", ".1"])
        ),
        _ => v.to_uppercase(),
    }
}

const PYTHON_PACKAGING: &str = r#"
import sys
try:
    from packaging.version import Version, InvalidVersion
except ImportError:
    from pip._vendor.packaging.version import Version, InvalidVersion
def parse(s):
    try:
        return Version(s)
    except InvalidVersion:
        return None
out = []
for line in sys.stdin.read().split('\n'):
    if not line:
        continue
    a, b = line.split('\t')
    va, vb = parse(a), parse(b)
    if va is None or vb is None:
        out.append('X')
    else:
        out.append('<' if va < vb else '>' if va > vb else '=')
sys.stdout.write('\n'.join(out) + '\n')
"#;

#[test]
fn pep440_matches_python_packaging() {
    let mut rng = Rng(0x9e94_4005);
    let pairs = pairs(&mut rng, 5000, pep440_draw, pep440_mutate);
    let input: String = pairs.iter().map(|(a, b)| format!("{a}\t{b}\n")).collect();
    let out = run(
        "python3",
        &["-c", PYTHON_PACKAGING],
        &input,
        "the `python3-packaging` package",
    );
    assert_eq!(check(Scheme::Pep440, &pairs, &out), 5000);
}

// ---------------------------------------------------------------- rpm

const RPM_SEEDS: &[&str] = &[
    "3.0.7-27.el9",
    "1:3.0.7-27.el9",
    "1.2.11-40.el9",
    "2.34-60.el9_2.7",
    "4.18.0-477.10.1.el9_2",
    "7.76.1-26.el9_3.2",
    "1:1.1.1k-9.el8_7",
    "0.9.8zh-1",
    "2.0.0~rc1-1.fc38",
    "1.0^20230101git1a2b3c-2.fc39",
    "5.1.8-6.fc38",
    "3.6.0-lp155.1.1",
    "2:8.2.2637-20.el9_1",
    "1.46.5-3.el9",
    "252-14.el9_2.3",
    "1.0.2-0.1.beta3.el9",
    "10.2-1",
    "15.1~b2-1.1",
    "0.20.1-150500.3.3.1",
    "1.36.1-8.amzn2023.0.2",
];

fn rpm_mutate(rng: &mut Rng, v: &str) -> String {
    match rng.below(9) {
        0..=2 => mutate_digits(rng, v),
        3 | 4 => format!(
            "{v}{}",
            rng.pick(&[
                "~rc1", "~", "^post1", "^", ".1", "a", "_1", ".el9", "+git", "~~", "^^", ".0"
            ])
        ),
        5 => format!("{}:{v}", rng.pick(&["0", "1", "2", "01", ""])),
        6 => match v.rfind('-') {
            Some(d) if rng.chance(50) => v[..d].to_owned(),
            Some(d) => format!(
                "{}-{}",
                &v[..d],
                rng.pick(&["1", "2.el9", "1.el9_1", "", "~1", "0"])
            ),
            None => format!("{v}-{}", rng.pick(&["1", "0.1"])),
        },
        7 => v.replacen('.', rng.pick(&["_", "..", "", "~", "^", "+"]), 1),
        _ => v.to_uppercase(),
    }
}

/// Short strings over rpm's interesting characters: `rpmvercmp` itself.
fn rpm_raw(rng: &mut Rng) -> String {
    let alphabet = [
        '0', '1', '2', '9', 'a', 'b', 'Z', '.', '~', '^', '_', '+', 'é',
    ];
    let n = 1 + rng.below(7);
    (0..n)
        .map(|_| alphabet[rng.below(alphabet.len())])
        .collect()
}

const RPM_LUA: &str = "%{lua: for line in io.lines() do \
    local a, b = line:match('^(.*)\\t(.*)$'); \
    local ok, r = pcall(rpm.vercmp, a, b); \
    if not ok then io.write('X\\n') elseif r < 0 then io.write('<\\n') elseif r > 0 then io.write('>\\n') else io.write('=\\n') end \
    end}";

#[test]
fn rpm_matches_rpm_vercmp() {
    let mut rng = Rng(0x0e9a_5eed);
    let mut pairs = pairs(
        &mut rng,
        3000,
        |r| {
            let v = r.pick(RPM_SEEDS).to_owned();
            if r.chance(60) { rpm_mutate(r, &v) } else { v }
        },
        rpm_mutate,
    );
    // Plain versions (no ':' or '-'): rpmvercmp without the EVR split.
    pairs.extend(self::pairs(&mut rng, 3000, rpm_raw, |r, v| {
        if r.chance(50) {
            format!("{v}{}", rpm_raw(r))
        } else {
            mutate_digits(r, v)
        }
    }));
    pairs.push((String::new(), "1".to_owned()));
    let input: String = pairs.iter().map(|(a, b)| format!("{a}\t{b}\n")).collect();
    let out = run("rpm", &["--eval", RPM_LUA], &input, "the `rpm` package");
    assert_eq!(check(Scheme::Rpm, &pairs, &out), 6001);
}

// ---------------------------------------------------------------- Maven

const MAVEN_SEEDS: &[&str] = &[
    "1.0",
    "1.0.0",
    "2.13.4.2",
    "1.2-SNAPSHOT",
    "3.0.0-M5",
    "5.3.27.RELEASE",
    "2.0.0.Final",
    "4.1.94.Final",
    "1.0-alpha-1",
    "1.0-beta2",
    "1.0-rc1",
    "1.0.RC2",
    "1.0-CR1",
    "31.1-jre",
    "32.0.0-android",
    "1.0-sp1",
    "9.4.51.v20230217",
    "1.70",
    "2.0.0-ga",
    "1.0.0-20230101.123456-1",
    "7",
    "1-1",
    "1.0.0-alpha.beta",
    "0.9.9-m1",
    "1.0a1",
];

fn maven_mutate(rng: &mut Rng, v: &str) -> String {
    match rng.below(8) {
        0 | 1 => mutate_digits(rng, v),
        2 | 3 => format!(
            "{v}{}{}",
            rng.pick(&[".", "-", "", "."]),
            rng.pick(&[
                "0", "1", "a", "b1", "m2", "rc", "cr3", "SNAPSHOT", "ga", "final", "release", "sp",
                "sp2", "xyz", "RC1", "alpha", "0.0", "-", ".", "Final"
            ])
        ),
        4 => v.replacen('.', "-", 1),
        5 => v.replacen('-', ".", 1),
        6 => match v.rfind(['.', '-']) {
            Some(p) => v[..p].to_owned(),
            None => format!("{v}.0"),
        },
        _ => v.to_lowercase(),
    }
}

const MAVEN_JAVA: &str = r#"
import java.io.*;
import org.apache.maven.artifact.versioning.ComparableVersion;
public class MavenOracle {
    public static void main(String[] args) throws IOException {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, "UTF-8"));
        StringBuilder out = new StringBuilder();
        String line;
        while ((line = in.readLine()) != null) {
            int tab = line.indexOf('\t');
            int c = new ComparableVersion(line.substring(0, tab)).compareTo(new ComparableVersion(line.substring(tab + 1)));
            out.append(c < 0 ? "<" : c > 0 ? ">" : "=").append('\n');
        }
        System.out.print(out);
    }
}
"#;

#[test]
fn maven_matches_comparable_version() {
    let jar = std::fs::read_dir("/usr/share/maven/lib")
        .ok()
        .and_then(|d| {
            d.filter_map(Result::ok).map(|e| e.path()).find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("maven-artifact"))
            })
        })
        .unwrap_or_else(|| {
            panic!("no /usr/share/maven/lib/maven-artifact-*.jar; install the `maven` package")
        });
    let dir = std::env::temp_dir().join(format!("berth-maven-oracle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let src = dir.join("MavenOracle.java");
    std::fs::write(&src, MAVEN_JAVA).expect("write oracle source");
    let mut rng = Rng(0x3a7e_5eed);
    let pairs = pairs(
        &mut rng,
        4000,
        |r| {
            let v = r.pick(MAVEN_SEEDS).to_owned();
            if r.chance(60) { maven_mutate(r, &v) } else { v }
        },
        maven_mutate,
    );
    let input: String = pairs.iter().map(|(a, b)| format!("{a}\t{b}\n")).collect();
    let jar = jar.to_string_lossy().into_owned();
    let src = src.to_string_lossy().into_owned();
    let out = run(
        "java",
        &["-cp", &jar, &src],
        &input,
        "the `maven` package and a JRE (`default-jre-headless`)",
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(check(Scheme::Maven, &pairs, &out), 4000);
}

// ---------------------------------------------------------------- RubyGems

const GEM_SEEDS: &[&str] = &[
    "1.0",
    "7.0.4.3",
    "2.7.0.beta1",
    "1.13.10",
    "3.2.0.rc1",
    "0.9.9.pre",
    "1.0.0-rc.1",
    "5.0.0.racecar1",
    "1.0a",
    "2.0.0.pre.alpha",
    "0",
    "10.1",
    "1.2.3.4.5",
    "1.0-1",
    "3.0.0-beta-2",
];

fn gem_mutate(rng: &mut Rng, v: &str) -> String {
    match rng.below(7) {
        0 | 1 => mutate_digits(rng, v),
        2 | 3 => format!(
            "{v}{}",
            rng.pick(&[
                ".0", ".1", ".a", ".pre", "a", ".rc1", "-1", "-pre", ".B", "b2", ".0.0", "-", ".",
                " ", "_1", "--x"
            ])
        ),
        4 => v.replacen('.', "-", 1),
        5 => v.to_uppercase(),
        _ => match v.rfind(['.', '-']) {
            Some(p) => v[..p].to_owned(),
            None => format!("{v}.0"),
        },
    }
}

const RUBY_GEMS: &str = r#"
out = []
STDIN.each_line do |line|
  a, b = line.chomp("\n").split("\t", -1)
  if Gem::Version.correct?(a) && Gem::Version.correct?(b)
    out << ['<', '=', '>'][(Gem::Version.new(a) <=> Gem::Version.new(b)) + 1]
  else
    out << 'X'
  end
end
STDOUT.write(out.join("\n") + "\n")
"#;

#[test]
fn rubygems_matches_gem_version() {
    let mut rng = Rng(0x9e35_5eed);
    let pairs = pairs(
        &mut rng,
        4000,
        |r| {
            let v = r.pick(GEM_SEEDS).to_owned();
            if r.chance(60) { gem_mutate(r, &v) } else { v }
        },
        gem_mutate,
    );
    let input: String = pairs.iter().map(|(a, b)| format!("{a}\t{b}\n")).collect();
    let out = run("ruby", &["-e", RUBY_GEMS], &input, "the `ruby` package");
    assert_eq!(check(Scheme::RubyGems, &pairs, &out), 4000);
}
