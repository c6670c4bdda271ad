//! The files of `study analyze` (STUDY.md 5.7) under `<study>/analysis/`: summary.json,
//! tally.csv, per_prompt.csv, raters.csv, agreement.csv, bt.csv and pairwise.csv (more than two
//! systems), table.tex, figure_preference.{png,svg} and report.md with a generated methods
//! paragraph. Every file written whole.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flowlens_analysis::figures;
use flowlens_analysis::pref::{ForestFigure, ForestRow, Interval, PreferenceBar, PreferenceFigure};

use super::analyze::{PairResult, Summary};
use super::design::StudyToml;
use super::files::{Manifest, write_json, write_whole};

fn f(x: Option<f64>) -> String {
    x.map_or(String::new(), |v| format!("{v:.6}"))
}

fn ci(x: Option<Interval>) -> (String, String) {
    (f(x.map(|i| i.lower)), f(x.map(|i| i.upper)))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

/// `***` below 0.001, `**` below 0.01, `*` below alpha, else `n.s.`.
pub fn mark(p: Option<f64>, alpha: f64) -> String {
    match p {
        Some(p) if p < 0.001 => "***".into(),
        Some(p) if p < 0.01 => "**".into(),
        Some(p) if p < alpha => "*".into(),
        _ => "n.s.".into(),
    }
}

fn tally_csv(s: &Summary) -> String {
    let mut out = String::from(
        "criterion,a,b,raters,prompts,wins_a,wins_b,ties,share_a,share_tie,share_b,win_rate,wilson_lo,wilson_hi,cp_lo,cp_hi,naive_p,icc_prompt,design_effect,n_eff,cluster_lo,cluster_hi,sign_flip_p,holm_p,sens_raters,sens_win_rate,sens_cluster_lo,sens_cluster_hi,sens_sign_flip_p\n",
    );
    for p in &s.pairs {
        let (wl, wh) = ci(p.wilson);
        let (cl, chi) = ci(p.clopper_pearson);
        let (kl, kh) = ci(p.cluster_ci);
        let sens = p.sensitivity.as_ref();
        let (sl, sh) = ci(sens.and_then(|x| x.cluster_ci));
        let shares = p.shares.unwrap_or((f64::NAN, f64::NAN, f64::NAN));
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{:.6},{:.6},{:.6},{},{wl},{wh},{cl},{chi},{},{},{},{},{kl},{kh},{},{},{},{},{sl},{sh},{}",
            p.criterion,
            csv_field(&p.a),
            csv_field(&p.b),
            p.raters,
            p.prompts,
            p.tally.a,
            p.tally.b,
            p.tally.ties,
            shares.0,
            shares.1,
            shares.2,
            f(p.win_rate),
            f(p.naive_p),
            f(p.icc_prompt),
            f(p.design_effect),
            f(p.n_eff),
            f(p.sign_flip_p),
            f(p.holm_p),
            sens.map_or(0, |x| x.raters),
            f(sens.and_then(|x| x.win_rate)),
            f(sens.and_then(|x| x.sign_flip_p)),
        );
    }
    out
}

fn per_prompt_csv(s: &Summary) -> String {
    let mut out = String::from(
        "criterion,a,b,prompt,category,text,wins_a,wins_b,ties,win_rate,wilson_lo,wilson_hi\n",
    );
    for p in &s.pairs {
        for r in &p.per_prompt {
            let (lo, hi) = ci(r.wilson);
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{lo},{hi}",
                p.criterion,
                csv_field(&p.a),
                csv_field(&p.b),
                r.prompt,
                csv_field(r.category.as_deref().unwrap_or("")),
                csv_field(&r.text),
                r.tally.a,
                r.tally.b,
                r.tally.ties,
                f(r.win_rate)
            );
        }
    }
    out
}

fn raters_csv(s: &Summary) -> String {
    let mut out = String::from(
        "rater,main,assigned,gold,gold_correct,gold_accuracy,repeats,repeats_consistent,left_share,median_rt_ms,loo_agreement,superseded,excluded,rules\n",
    );
    for r in &s.raters {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.rater,
            r.main,
            r.assigned,
            r.gold,
            r.gold_correct,
            f(r.gold_accuracy),
            r.repeats,
            r.repeats_consistent,
            f(r.left_share),
            r.median_rt_ms.map_or(String::new(), |m| m.to_string()),
            f(r.loo_agreement),
            r.superseded,
            !r.excluded_by.is_empty(),
            csv_field(&r.excluded_by.join("; "))
        );
    }
    out
}

fn agreement_csv(s: &Summary) -> String {
    let mut out = String::from(
        "criterion,a,b,raw,fleiss_kappa,alpha_nominal,alpha_nominal_lo,alpha_nominal_hi,alpha_ordinal,prevalence_a\n",
    );
    for p in &s.pairs {
        if let Some(a) = &p.agreement {
            let (lo, hi) = ci(a.alpha_nominal_ci);
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{lo},{hi},{},{}",
                p.criterion,
                csv_field(&p.a),
                csv_field(&p.b),
                f(a.raw),
                f(a.fleiss_kappa),
                f(a.alpha_nominal),
                f(a.alpha_ordinal),
                f(a.prevalence_a)
            );
        }
    }
    out
}

fn latex_escape(s: &str) -> String {
    flowlens_analysis::tables::escape_latex(s)
}

/// The booktabs table: criterion, A %, tie %, B %, p̂ [95 % clustered CI], primary p.
pub fn table_tex(s: &Summary) -> String {
    let level = format!("{:.0}", 100.0 * s.level);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\\begin{{table}}[t]\n\\centering\n\\begin{{tabular}}{{llrrrcc}}\n\\toprule"
    );
    let _ = writeln!(
        out,
        "Criterion & Comparison & A (\\%) & Tie (\\%) & B (\\%) & $\\hat p$ [{level}\\,\\% CI] & $p$ \\\\\n\\midrule"
    );
    for p in &s.pairs {
        let (sa, st, sb) = p.shares.unwrap_or((f64::NAN, f64::NAN, f64::NAN));
        let ci = p.cluster_ci.map_or("--".into(), |i| {
            format!("[{:.1}, {:.1}]", 100.0 * i.lower, 100.0 * i.upper)
        });
        let _ = writeln!(
            out,
            "{} & {} vs {} & {} & {} & {} & {} {} & {} \\\\",
            latex_escape(&p.criterion.replace('_', " ")),
            latex_escape(&p.a),
            latex_escape(&p.b),
            pct(sa),
            pct(st),
            pct(sb),
            p.win_rate.map_or("--".into(), pct),
            ci,
            p.holm_p
                .or(p.sign_flip_p)
                .map_or("--".into(), |x| format!("{x:.3}"))
        );
    }
    let _ = writeln!(
        out,
        "\\bottomrule\n\\end{{tabular}}\n\\caption{{Pairwise preferences ({} raters $\\times$ {} prompts). $\\hat p$: A's win rate among decisive votes; intervals by a two-way cluster bootstrap over prompts and raters; $p$: prompt-level sign-flip test, Holm-adjusted across the pre-registered family.}}\n\\label{{tab:preference}}\n\\end{{table}}",
        s.raters_with_ratings - s.raters_excluded,
        s.prompts
    );
    out
}

/// The methods paragraph of the report.
pub fn methods(s: &Summary, spec: &StudyToml, manifest: &Manifest) -> String {
    let crossed =
        spec.raters.ratings_per_pair == 0 || spec.raters.ratings_per_pair >= spec.raters.count;
    let noise = if manifest.same_noise {
        "Both images of a pair were generated from the same prompt and the same initial noise"
    } else {
        "Both images of a pair were generated from the same prompt and seed"
    };
    let simulated = if s.simulated_raters > 0 {
        format!(
            "SIMULATED: {} of the {} raters are `flowlens study simulate` raters with known ground truth, not people; ",
            s.simulated_raters, s.raters_with_ratings
        )
    } else {
        String::new()
    };
    format!(
        "{simulated}{} raters ({} excluded by the pre-registered rules: {}) judged {} prompts × {} seed{} of {} systems ({}) in a {} design, {} judgments per rater on average. {noise} ({} Euler steps, guidance {}), and shown side by side under opaque ids with left and right counterbalanced across raters; criteria ({}) were asked on separate screens in a per-rater random order, with {} gold items and side-swapped repeats mixed in. Responses were {}. We report shares of all judgments and the win rate among decisive votes; 95 % intervals come from a two-way cluster bootstrap over prompts and raters (B = {}, seed {}), and p-values from a prompt-level sign-flip test ({} sign vectors), Holm-adjusted across {}. Naive binomial intervals and tests, which assume independent votes, are reported alongside for comparison only.",
        s.raters_with_ratings,
        s.raters_excluded,
        describe_rules(&spec.analysis.exclude),
        s.prompts,
        s.seeds,
        if s.seeds == 1 { "" } else { "s" },
        s.systems.len(),
        s.systems.join(", "),
        if crossed {
            "fully crossed"
        } else {
            "balanced incomplete"
        },
        s.raters
            .iter()
            .map(|r| r.main)
            .sum::<usize>()
            .checked_div(s.raters.len())
            .unwrap_or(0),
        spec.sampler.steps,
        spec.sampler.cfg,
        spec.criteria
            .iter()
            .map(|c| c.id.replace('_', " "))
            .collect::<Vec<_>>()
            .join(", "),
        spec.criteria
            .iter()
            .map(|c| match c.gold.as_str() {
                "degraded" => format!(
                    "{} (an image vs a degraded copy of itself)",
                    c.id.replace('_', " ")
                ),
                "mismatch" => format!(
                    "{} (the prompt's image vs an image of another prompt)",
                    c.id.replace('_', " ")
                ),
                _ => String::new(),
            })
            .filter(|x| !x.is_empty())
            .collect::<Vec<_>>()
            .join(" and "),
        spec.protocol.responses.join(" / "),
        s.bootstrap_rounds,
        s.seed,
        s.sign_flip_rounds,
        if spec.analysis.primary.is_empty() {
            "no family (none pre-registered as primary)".to_string()
        } else {
            format!(
                "the criteria {} and every system pair",
                spec.analysis.primary.join(", ")
            )
        },
    )
}

fn describe_rules(r: &super::design::ExclusionRules) -> String {
    let mut out = Vec::new();
    if r.gold_accuracy_below > 0.0 {
        out.push(format!(
            "gold accuracy below {} with at least {} gold items",
            r.gold_accuracy_below, r.gold_min_items
        ));
    }
    if r.median_rt_below_ms > 0 {
        out.push(format!(
            "median response time below {} ms",
            r.median_rt_below_ms
        ));
    }
    if r.same_side_at_least > 0.0 {
        out.push(format!(
            "at least {:.0} % of answers on one side",
            100.0 * r.same_side_at_least
        ));
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join("; ")
    }
}

fn result_line(p: &PairResult) -> String {
    let (sa, st, sb) = p.shares.unwrap_or((f64::NAN, f64::NAN, f64::NAN));
    format!(
        "| {} | {} vs {} | {} / {} / {} | {} | {} | {} | {} | {} | {} | {} |",
        p.criterion,
        p.a,
        p.b,
        pct(sa),
        pct(st),
        pct(sb),
        p.win_rate.map_or("–".into(), pct),
        p.cluster_ci.map_or("–".into(), |i| format!(
            "[{}, {}]",
            pct(i.lower),
            pct(i.upper)
        )),
        p.sign_flip_p.map_or("–".into(), |x| format!("{x:.4}")),
        p.holm_p.map_or("–".into(), |x| format!("{x:.4}")),
        p.wilson.map_or("–".into(), |i| format!(
            "[{}, {}]",
            pct(i.lower),
            pct(i.upper)
        )),
        p.naive_p.map_or("–".into(), |x| format!("{x:.4}")),
        p.design_effect.map_or("–".into(), |d| format!("{d:.2}")),
    )
}

/// report.md.
pub fn report_md(s: &Summary, spec: &StudyToml, manifest: &Manifest) -> String {
    let mut out = format!("# Preference study `{}`\n\n", s.study_id);
    let _ = writeln!(out, "![preferences](figure_preference.png)\n");
    let _ = writeln!(out, "## Methods\n\n{}\n", methods(s, spec, manifest));
    let _ = writeln!(
        out,
        "## Results\n\n| criterion | comparison | A / tie / B (%) | win rate (%) | {0:.0} % cluster CI | sign-flip p | Holm p | naive Wilson CI | naive p (assumes independent votes) | design effect |\n|---|---|---|---|---|---|---|---|---|---|",
        100.0 * s.level
    );
    for p in &s.pairs {
        let _ = writeln!(out, "{}", result_line(p));
    }
    let _ = writeln!(
        out,
        "\n### Sensitivity: every rater, no exclusions\n\n| criterion | comparison | raters | win rate (%) | cluster CI | sign-flip p |\n|---|---|---|---|---|---|"
    );
    for p in &s.pairs {
        if let Some(x) = &p.sensitivity {
            let _ = writeln!(
                out,
                "| {} | {} vs {} | {} | {} | {} | {} |",
                p.criterion,
                p.a,
                p.b,
                x.raters,
                x.win_rate.map_or("–".into(), pct),
                x.cluster_ci.map_or("–".into(), |i| format!(
                    "[{}, {}]",
                    pct(i.lower),
                    pct(i.upper)
                )),
                x.sign_flip_p.map_or("–".into(), |v| format!("{v:.4}"))
            );
        }
    }
    let b = &s.position_bias;
    let _ = writeln!(
        out,
        "\n## Diagnostics\n\n- Position bias: {} of {} decisive main answers chose the left image ({}); exact test p = {}. Counterbalancing cancels it in the system shares.",
        b.left,
        b.decisive,
        b.share.map_or("–".into(), |x| format!("{} %", pct(x))),
        b.p.map_or("–".into(), |p| format!("{p:.4}"))
    );
    for (c1, c2, phi) in &s.halo {
        let _ = writeln!(
            out,
            "- Halo between {c1} and {c2}: φ = {} (high values mean raters did not separate the criteria).",
            phi.map_or("–".into(), |p| format!("{p:.3}"))
        );
    }
    for p in &s.pairs {
        if let Some(a) = &p.agreement {
            let _ = writeln!(
                out,
                "- Agreement, {} ({} vs {}): raw {}, Fleiss κ {}, Krippendorff α {} (nominal), {} (ordinal); prevalence of A {}. A low κ next to a lopsided prevalence is the kappa paradox, not noise.",
                p.criterion,
                p.a,
                p.b,
                f(a.raw),
                f(a.fleiss_kappa),
                f(a.alpha_nominal),
                f(a.alpha_ordinal),
                f(a.prevalence_a)
            );
        }
        if let Some((x2, df, pv)) = p.heterogeneity {
            let _ = writeln!(
                out,
                "- Heterogeneity over prompts, {} ({} vs {}): X² = {x2:.2} on {df} df, p = {pv:.4} (approximate).",
                p.criterion, p.a, p.b
            );
        }
    }
    let _ = writeln!(
        out,
        "\n## Raters\n\n| rater | main | gold correct | repeats consistent | left share | median rt (ms) | LOO agreement | excluded by |\n|---|---|---|---|---|---|---|---|"
    );
    for r in &s.raters {
        let _ = writeln!(
            out,
            "| {} | {}/{} | {}/{} | {}/{} | {} | {} | {} | {} |",
            r.rater,
            r.main,
            r.assigned,
            r.gold_correct,
            r.gold,
            r.repeats_consistent,
            r.repeats,
            f(r.left_share),
            r.median_rt_ms.map_or(String::new(), |m| m.to_string()),
            f(r.loo_agreement),
            if r.excluded_by.is_empty() {
                "–".to_string()
            } else {
                r.excluded_by.join("; ")
            }
        );
    }
    for w in &s.warnings {
        let _ = writeln!(out, "\n> warning: {w}");
    }
    let _ = writeln!(
        out,
        "\nFiles: summary.json, tally.csv, per_prompt.csv, raters.csv, agreement.csv, table.tex, figure_preference.png/svg, figure_per_prompt_*.png/svg{}.",
        if s.bradley_terry.is_empty() {
            ""
        } else {
            ", bt.csv, pairwise.csv"
        }
    );
    out
}

fn bt_csvs(s: &Summary) -> (String, String) {
    let mut bt =
        String::from("criterion,system,theta,theta_lo,theta_hi,elo,theta_davidson,nu_davidson\n");
    let mut pw = String::from("criterion,system_i,system_j,p_i_beats_j,lo,hi\n");
    for row in &s.bradley_terry {
        let (Some(fit), Some(elo)) = (&row.fit, &row.elo) else {
            continue;
        };
        for (i, name) in row.systems.iter().enumerate() {
            let _ = writeln!(
                bt,
                "{},{},{:.6},{:.6},{:.6},{:.1},{},{}",
                row.criterion,
                name,
                fit.theta[i],
                fit.theta_ci[i].lower,
                fit.theta_ci[i].upper,
                elo[i],
                f(row.davidson.as_ref().map(|d| d.0[i])),
                f(row.davidson.as_ref().map(|d| d.1))
            );
            for (j, other) in row.systems.iter().enumerate() {
                if i != j {
                    let _ = writeln!(
                        pw,
                        "{},{},{},{:.6},{:.6},{:.6}",
                        row.criterion,
                        name,
                        other,
                        fit.prob[i][j],
                        fit.prob_ci[i][j].lower,
                        fit.prob_ci[i][j].upper
                    );
                }
            }
        }
    }
    (bt, pw)
}

/// Writes every output into `dir`; returns the paths.
pub fn write_all(
    dir: &Path,
    s: &Summary,
    spec: &StudyToml,
    manifest: &Manifest,
) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut put = |name: &str, text: String| -> Result<()> {
        let p = dir.join(name);
        write_whole(&p, text.as_bytes())?;
        files.push(p);
        Ok(())
    };
    put("tally.csv", tally_csv(s))?;
    put("per_prompt.csv", per_prompt_csv(s))?;
    put("raters.csv", raters_csv(s))?;
    put("agreement.csv", agreement_csv(s))?;
    put("table.tex", table_tex(s))?;
    put("report.md", report_md(s, spec, manifest))?;
    if !s.bradley_terry.is_empty() {
        let (bt, pw) = bt_csvs(s);
        put("bt.csv", bt)?;
        put("pairwise.csv", pw)?;
    }
    write_json(&dir.join("summary.json"), s)?;
    files.push(dir.join("summary.json"));
    // Figure 4: one bar per criterion for the first pair (or the only one).
    if let Some(first) = s.pairs.first() {
        let bars: Vec<PreferenceBar> = s
            .pairs
            .iter()
            .filter(|p| p.a == first.a && p.b == first.b)
            .filter_map(|p| {
                Some(PreferenceBar {
                    label: p.criterion.replace('_', " "),
                    shares: p.shares?,
                    win_rate: p.win_rate?,
                    interval: p.cluster_ci.map(|i| (i.lower, i.upper))?,
                    mark: mark(p.holm_p.or(p.sign_flip_p), s.alpha),
                })
            })
            .collect();
        if !bars.is_empty() {
            let figure = PreferenceFigure {
                title: format!("Preference: {} vs {}", first.a, first.b),
                a: first.a.clone(),
                b: first.b.clone(),
                bars,
                note: format!(
                    "{} raters x {} prompts. Bars: shares of all judgments. Dots: {}'s win rate among decisive votes, whiskers: {:.0} % two-way cluster bootstrap CI; marks: sign-flip test (Holm).",
                    s.raters_with_ratings - s.raters_excluded,
                    s.prompts,
                    first.a,
                    100.0 * s.level
                ),
            };
            let (png, svg) = figures::save(&figure, dir, "figure_preference")?;
            files.push(png);
            files.push(svg);
        }
    }
    // More than two systems: each system's Bradley-Terry win probability against the reference
    // with its cluster-bootstrap interval, per criterion.
    for row in &s.bradley_terry {
        let (Some(fit), Some(elo)) = (&row.fit, &row.elo) else {
            continue;
        };
        let r = row.reference;
        let rows: Vec<ForestRow> = (0..row.systems.len())
            .filter(|&i| i != r)
            .map(|i| ForestRow {
                label: format!("{} (Elo {:.0})", row.systems[i], elo[i]),
                win_rate: fit.prob[i][r],
                interval: (fit.prob_ci[i][r].lower, fit.prob_ci[i][r].upper),
                n: None,
            })
            .collect();
        let figure = ForestFigure {
            title: format!(
                "{}: Bradley-Terry, P(system beats {})",
                row.criterion.replace('_', " "),
                row.systems[r]
            ),
            rows,
            overall: 0.5,
            note: format!(
                "σ(θ_i − θ_ref) with {:.0} % two-way cluster bootstrap intervals ({} rounds); ties count half; Elo = 1000 + 400/ln 10 (θ_i − θ_ref).",
                100.0 * s.level,
                fit.rounds
            ),
        };
        let (png, svg) = figures::save(&figure, dir, &format!("figure_bt_{}", row.criterion))?;
        files.push(png);
        files.push(svg);
    }
    // The forest plot of every criterion and pair: per-prompt win rates with Wilson intervals.
    for p in &s.pairs {
        let rows: Vec<ForestRow> = p
            .per_prompt
            .iter()
            .filter_map(|r| {
                Some(ForestRow {
                    label: r.text.clone(),
                    win_rate: r.win_rate?,
                    interval: r.wilson.map(|i| (i.lower, i.upper))?,
                    n: Some(r.tally.decisive()),
                })
            })
            .collect();
        let (Some(overall), false) = (p.win_rate, rows.is_empty()) else {
            continue;
        };
        let figure = ForestFigure {
            title: format!(
                "{}: {} vs {}, per prompt",
                p.criterion.replace('_', " "),
                p.a,
                p.b
            ),
            rows,
            overall,
            note: format!(
                "{}'s win rate among decisive votes per prompt, Wilson {:.0} % intervals (raters as independent within a prompt); blue: overall, grey: 1/2.",
                p.a,
                100.0 * s.level
            ),
        };
        let pairs_of_criterion = s
            .pairs
            .iter()
            .filter(|q| q.criterion == p.criterion)
            .count();
        let safe = |name: &str| -> String {
            name.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        let stem = if pairs_of_criterion == 1 {
            format!("figure_per_prompt_{}", p.criterion)
        } else {
            format!(
                "figure_per_prompt_{}_{}_vs_{}",
                p.criterion,
                safe(&p.a),
                safe(&p.b)
            )
        };
        let (png, svg) = figures::save(&figure, dir, &stem)?;
        files.push(png);
        files.push(svg);
    }
    Ok(files)
}

/// The grouped-bar variant of Figure 4 (`study analyze --style grouped`, the paper's look):
/// per criterion, the shares of A, ties and B of the first system pair as bars, written as
/// `figure_preference_grouped.{png,svg}` beside the stacked figure (which carries the intervals).
pub fn grouped_figure(dir: &Path, s: &Summary) -> Result<(PathBuf, PathBuf)> {
    let first = s
        .pairs
        .first()
        .context("the study has no results to draw")?;
    let pairs: Vec<&PairResult> = s
        .pairs
        .iter()
        .filter(|p| p.a == first.a && p.b == first.b && p.shares.is_some())
        .collect();
    let share = |f: fn((f64, f64, f64)) -> f64| -> Vec<f64> {
        pairs
            .iter()
            .map(|p| 100.0 * f(p.shares.unwrap_or_default()))
            .collect()
    };
    let chart = figures::BarChart {
        title: format!(
            "Preference: {} vs {} ({} raters x {} prompts)",
            first.a,
            first.b,
            s.raters_with_ratings - s.raters_excluded,
            s.prompts
        ),
        y_label: "share of judgments (%)".into(),
        groups: pairs
            .iter()
            .map(|p| p.criterion.replace('_', " "))
            .collect(),
        series: vec![first.a.clone(), "tie".into(), first.b.clone()],
        values: vec![share(|x| x.0), share(|x| x.1), share(|x| x.2)],
        errors: None,
    };
    Ok(figures::save(&chart, dir, "figure_preference_grouped")?)
}
