//! Who sees what, in which order and on which side (STUDY.md 5.3): main items (one per prompt,
//! seed and system pair), gold items built from the study's own images, coverage (fully
//! crossed or balanced incomplete), left/right counterbalanced per item and per rater, a
//! per-rater order with criteria in blocks, gold items at random places and side-swapped
//! repeats at least `repeat_gap` screens after their original. Pure: the same inputs give the
//! same assignment.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::design::{Prompt, StudyToml};
use super::files::{GoldItem, Item, Rater, Task};

/// Letters and digits that cannot be mistaken for each other (no 0/O, 1/I/L, 2/Z, 5/S, 8/B).
const CODE_ALPHABET: &[u8] = b"ACDEFGHJKMNPQRTUVWXY34679";

/// The rater codes of a study: four characters and a check character, distinct.
pub fn rater_codes(seed: u64, count: usize) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xC0DE_C0DE);
    let mut codes: Vec<String> = Vec::with_capacity(count);
    while codes.len() < count {
        let idx: Vec<usize> = (0..4)
            .map(|_| rng.random_range(0..CODE_ALPHABET.len()))
            .collect();
        let code = with_check(&idx);
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    codes
}

fn with_check(idx: &[usize]) -> String {
    let check = idx
        .iter()
        .enumerate()
        .map(|(i, &x)| (i + 1) * x)
        .sum::<usize>()
        % CODE_ALPHABET.len();
    idx.iter()
        .chain(std::iter::once(&check))
        .map(|&i| CODE_ALPHABET[i] as char)
        .collect()
}

/// Whether a rater code's check character holds (catches a mistyped character).
pub fn code_is_valid(code: &str) -> bool {
    let idx: Option<Vec<usize>> = code
        .bytes()
        .map(|b| CODE_ALPHABET.iter().position(|&a| a == b))
        .collect();
    idx.is_some_and(|idx| idx.len() == 5 && with_check(&idx[..4]) == code)
}

/// The (system, prompt) whose first-seed image gets a degraded copy for gold items: one per
/// prompt, the systems taken in turn.
pub fn degraded_sources(spec: &StudyToml, prompts: usize) -> Vec<(usize, usize)> {
    if !spec.criteria.iter().any(|c| c.gold == "degraded") {
        return Vec::new();
    }
    let k = spec.systems.len();
    (0..prompts).map(|p| (p % k, p)).collect()
}

/// What the assignment needs to know about the images.
pub struct Images<'a> {
    /// The id of system s's image of prompt p at seed index j.
    pub main: &'a dyn Fn(usize, usize, usize) -> String,
    /// The id of the degraded copy of [`degraded_sources`]' image of prompt p.
    pub degraded: &'a dyn Fn(usize) -> Option<String>,
}

fn sorted(a: String, b: String) -> [String; 2] {
    if a <= b { [a, b] } else { [b, a] }
}

/// Main items with the id of each item's system-A image (the pair's first system).
pub fn main_items(
    spec: &StudyToml,
    prompts: &[Prompt],
    seeds: &[u64],
    images: &Images,
) -> Vec<(Item, String)> {
    let mut out = Vec::new();
    for (p, prompt) in prompts.iter().enumerate() {
        for (j, &seed) in seeds.iter().enumerate() {
            for (a, b) in spec.pairs() {
                let (ia, ib) = ((images.main)(a, p, j), (images.main)(b, p, j));
                out.push((
                    Item {
                        id: format!("m{:04}", out.len() + 1),
                        prompt: prompt.id.clone(),
                        seed,
                        images: sorted(ia.clone(), ib),
                    },
                    ia,
                ));
            }
        }
    }
    out
}

/// Gold items of every criterion that has them.
pub fn gold_items(spec: &StudyToml, prompts: &[Prompt], images: &Images) -> Vec<GoldItem> {
    let k = spec.systems.len();
    let n = prompts.len();
    let mut out: Vec<GoldItem> = Vec::new();
    let push = |out: &mut Vec<GoldItem>,
                prompt: &Prompt,
                criterion: &str,
                right: String,
                wrong: String| {
        let id = format!("g{:04}", out.len() + 1);
        out.push(GoldItem {
            id,
            prompt: prompt.id.clone(),
            criterion: criterion.into(),
            images: sorted(right.clone(), wrong),
            answer: right,
        });
    };
    for c in &spec.criteria {
        match c.gold.as_str() {
            "degraded" => {
                for (s, p) in degraded_sources(spec, n) {
                    if let Some(d) = (images.degraded)(p) {
                        push(&mut out, &prompts[p], &c.id, (images.main)(s, p, 0), d);
                    }
                }
            }
            "mismatch" if n >= 2 => {
                for p in 0..n {
                    let other = match &prompts[p].category {
                        Some(cat) => (1..n)
                            .map(|d| (p + d) % n)
                            .find(|&q| prompts[q].category.as_ref() != Some(cat)),
                        None => None,
                    }
                    .unwrap_or((p + n / 2).max(p + 1) % n);
                    let s = p % k;
                    push(
                        &mut out,
                        &prompts[p],
                        &c.id,
                        (images.main)(s, p, 0),
                        (images.main)(s, other, 0),
                    );
                }
            }
            _ => {}
        }
    }
    out
}

/// A screen before sequence numbers are given.
#[derive(Clone)]
struct Draft {
    item: String,
    kind: &'static str,
    criterion: String,
    left: String,
    right: String,
}

/// Every rater's tasks. `items` carry the id of their system-A image, for counterbalancing.
pub fn assign(spec: &StudyToml, items: &[(Item, String)], gold: &[GoldItem]) -> Vec<Rater> {
    let r = spec.raters.count;
    let codes = rater_codes(spec.seed, r);
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ 0xA551_6000);
    let mut item_order: Vec<usize> = (0..items.len()).collect();
    item_order.shuffle(&mut rng);
    let mut rater_order: Vec<usize> = (0..r).collect();
    rater_order.shuffle(&mut rng);
    let crossed = spec.raters.ratings_per_pair == 0 || spec.raters.ratings_per_pair >= r;
    // (rater, item index, A on the left)
    let mut mains: Vec<Vec<(usize, bool)>> = vec![Vec::new(); r];
    if crossed {
        for (ip, &i) in item_order.iter().enumerate() {
            for (rp, &rater) in rater_order.iter().enumerate() {
                mains[rater].push((i, (ip + rp) % 2 == 0));
            }
        }
    } else {
        let per = spec.raters.ratings_per_pair;
        // A-left minus A-right so far, per rater: the raters most behind get A on the left.
        let mut balance = vec![0i64; r];
        for (ip, &i) in item_order.iter().enumerate() {
            let mut raters: Vec<usize> =
                (0..per).map(|t| rater_order[(ip * per + t) % r]).collect();
            raters.sort_by_key(|&x| (balance[x], x));
            let lefts = if ip % 2 == 0 {
                per.div_ceil(2)
            } else {
                per / 2
            };
            for (t, &rater) in raters.iter().enumerate() {
                let a_left = t < lefts;
                balance[rater] += if a_left { 1 } else { -1 };
                mains[rater].push((i, a_left));
            }
        }
    }
    codes
        .into_iter()
        .enumerate()
        .map(|(ri, code)| {
            let mut rng = ChaCha8Rng::seed_from_u64(
                spec.seed
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .wrapping_add(ri as u64 + 1),
            );
            let tasks = rater_tasks(spec, items, gold, &mains[ri], &mut rng);
            Rater { code, tasks }
        })
        .collect()
}

fn rater_tasks(
    spec: &StudyToml,
    items: &[(Item, String)],
    gold: &[GoldItem],
    mains: &[(usize, bool)],
    rng: &mut ChaCha8Rng,
) -> Vec<Task> {
    let p = &spec.protocol;
    let mut criteria: Vec<&super::design::Criterion> = spec.criteria.iter().collect();
    criteria.shuffle(rng);
    let gold_criteria = spec
        .criteria
        .iter()
        .filter(|c| c.gold != "none")
        .count()
        .max(1);
    let mut blocks: Vec<Vec<Draft>> = criteria
        .iter()
        .map(|c| {
            let mut block: Vec<Draft> = mains
                .iter()
                .map(|&(i, a_left)| {
                    let (item, a) = &items[i];
                    let b = if item.images[0] == *a {
                        &item.images[1]
                    } else {
                        &item.images[0]
                    };
                    let (left, right) = if a_left { (a, b) } else { (b, a) };
                    Draft {
                        item: item.id.clone(),
                        kind: "main",
                        criterion: c.id.clone(),
                        left: left.clone(),
                        right: right.clone(),
                    }
                })
                .collect();
            block.shuffle(rng);
            let mut pool: Vec<&GoldItem> = gold.iter().filter(|g| g.criterion == c.id).collect();
            pool.shuffle(rng);
            let want = ((p.gold_share * block.len() as f64).round() as usize)
                .max(p.gold_min.div_ceil(gold_criteria));
            for g in pool.into_iter().take(want) {
                let (left, right) = if rng.random_bool(0.5) {
                    (&g.images[0], &g.images[1])
                } else {
                    (&g.images[1], &g.images[0])
                };
                let at = rng.random_range(0..=block.len());
                block.insert(
                    at,
                    Draft {
                        item: g.id.clone(),
                        kind: "gold",
                        criterion: c.id.clone(),
                        left: left.clone(),
                        right: right.clone(),
                    },
                );
            }
            block
        })
        .collect();
    // Side-swapped repeats of main screens: originals early enough in their block for the
    // repeat to come `repeat_gap` screens later are drawn first (in a block too short for that,
    // the repeat goes to the block's end).
    let gap = p.repeat_gap;
    let mut candidates: Vec<(usize, String, bool)> = blocks
        .iter()
        .enumerate()
        .flat_map(|(b, block)| {
            let len = block.len();
            block
                .iter()
                .enumerate()
                .filter(|(_, d)| d.kind == "main")
                .map(move |(i, d)| (b, d.item.clone(), i + gap < len))
        })
        .collect();
    let want = ((p.repeat_share * candidates.len() as f64).round() as usize)
        .max(p.repeat_min)
        .min(candidates.len());
    candidates.shuffle(rng);
    candidates.sort_by_key(|c| !c.2);
    for (b, item, _) in candidates.into_iter().take(want) {
        let block = &mut blocks[b];
        let i = block
            .iter()
            .position(|d| d.kind == "main" && d.item == item)
            .expect("the original is in its block");
        let orig = block[i].clone();
        let lo = (i + p.repeat_gap + 1).min(block.len());
        let at = rng.random_range(lo..=block.len());
        block.insert(
            at,
            Draft {
                kind: "repeat",
                left: orig.right.clone(),
                right: orig.left.clone(),
                ..orig
            },
        );
    }
    blocks
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(seq, d)| Task {
            seq,
            item: d.item,
            kind: d.kind.into(),
            criterion: d.criterion,
            left: d.left,
            right: d.right,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::study::design::SystemSpec;

    fn spec(raters: usize, per_pair: usize) -> StudyToml {
        let sys = |n: &str| SystemSpec {
            name: n.into(),
            run: None,
            checkpoint: "latest".into(),
            weights: "ema".into(),
            images: Some(format!("/x/{n}")),
        };
        let mut s = StudyToml::new("t", vec![sys("ours"), sys("base")], "p.txt", raters);
        s.raters.ratings_per_pair = per_pair;
        s
    }

    fn build(s: &StudyToml, prompts: usize) -> (Vec<(Item, String)>, Vec<Rater>) {
        let prompts: Vec<Prompt> = (0..prompts)
            .map(|i| Prompt {
                id: format!("p{i:04}"),
                text: format!("prompt {i}"),
                category: None,
            })
            .collect();
        let main = |s: usize, p: usize, j: usize| {
            format!("{:016x}", (s * 1000 + p * 10 + j) * 7919 % 65_521)
        };
        let degraded = |p: usize| Some(format!("d{p:015}"));
        let images = Images {
            main: &main,
            degraded: &degraded,
        };
        let items = main_items(s, &prompts, &[0], &images);
        let gold = gold_items(s, &prompts, &images);
        let raters = assign(s, &items, &gold);
        (items, raters)
    }

    #[test]
    fn codes_carry_a_check_character() {
        let codes = rater_codes(3, 50);
        assert!(codes.iter().all(|c| code_is_valid(c)));
        let mut typo = codes[0].clone().into_bytes();
        typo[1] = if typo[1] == b'A' { b'C' } else { b'A' };
        assert!(!code_is_valid(std::str::from_utf8(&typo).unwrap()));
    }

    #[test]
    fn crossed_designs_are_counterbalanced_per_item_and_per_rater() {
        let s = spec(7, 0);
        let (items, raters) = build(&s, 20);
        for (item, a) in &items {
            for c in &s.criteria {
                let lefts: Vec<bool> = raters
                    .iter()
                    .flat_map(|r| r.tasks.iter())
                    .filter(|t| t.kind == "main" && t.item == item.id && t.criterion == c.id)
                    .map(|t| &t.left == a)
                    .collect();
                assert_eq!(lefts.len(), 7);
                let n = lefts.iter().filter(|&&x| x).count();
                assert!(n == 3 || n == 4, "{n}");
            }
        }
        for r in &raters {
            let main: Vec<&Task> = r.tasks.iter().filter(|t| t.kind == "main").collect();
            assert_eq!(main.len(), 40);
            let a_left = main
                .iter()
                .filter(|t| items.iter().any(|(i, a)| i.id == t.item && &t.left == a))
                .count();
            assert!((a_left as i64 - 20).abs() <= 1, "{a_left}");
            let gold = r.tasks.iter().filter(|t| t.kind == "gold").count();
            assert!(gold >= 4, "{gold}");
            // Repeats: sides swapped, at least repeat_gap screens after the original.
            let repeats: Vec<&Task> = r.tasks.iter().filter(|t| t.kind == "repeat").collect();
            assert!(repeats.len() >= 2);
            for rep in repeats {
                let orig = r
                    .tasks
                    .iter()
                    .find(|t| {
                        t.kind == "main" && t.item == rep.item && t.criterion == rep.criterion
                    })
                    .unwrap();
                assert_eq!((&orig.left, &orig.right), (&rep.right, &rep.left));
                assert!(
                    rep.seq > orig.seq + s.protocol.repeat_gap,
                    "{} {}",
                    orig.seq,
                    rep.seq
                );
            }
            assert!(r.tasks.iter().enumerate().all(|(i, t)| t.seq == i));
        }
    }

    #[test]
    fn incomplete_designs_cover_every_item_exactly_r_times() {
        let s = spec(10, 3);
        let (items, raters) = build(&s, 20);
        for (item, a) in &items {
            let seen: Vec<(&str, bool)> = raters
                .iter()
                .flat_map(|r| r.tasks.iter().map(move |t| (r.code.as_str(), t)))
                .filter(|(_, t)| {
                    t.kind == "main" && t.item == item.id && t.criterion == "aesthetics"
                })
                .map(|(c, t)| (c, &t.left == a))
                .collect();
            assert_eq!(seen.len(), 3);
            let mut codes: Vec<&str> = seen.iter().map(|s| s.0).collect();
            codes.dedup();
            assert_eq!(codes.len(), 3, "no rater sees a pair twice");
            let n = seen.iter().filter(|s| s.1).count();
            assert!(n == 1 || n == 2);
        }
        for r in &raters {
            let n = r
                .tasks
                .iter()
                .filter(|t| t.kind == "main" && t.criterion == "aesthetics")
                .count();
            assert!(n == 6 || n == 7, "{n}");
        }
    }

    #[test]
    fn prompt_selection_is_seeded_and_stratified() {
        use crate::study::design::{PromptsSpec, select_prompts};
        let all: Vec<Prompt> = (0..20)
            .map(|i| Prompt {
                id: format!("p{i:04}"),
                text: format!("t{i}"),
                category: Some(if i < 15 { "animals" } else { "vehicles" }.into()),
            })
            .collect();
        let spec = |select: &str| PromptsSpec {
            file: String::new(),
            seeds_per_prompt: 1,
            first_seed: 0,
            count: 8,
            select: select.into(),
        };
        let s = select_prompts(all.clone(), &spec("stratified"), 3).unwrap();
        assert_eq!(s.len(), 8);
        let vehicles = s
            .iter()
            .filter(|p| p.category.as_deref() == Some("vehicles"))
            .count();
        assert_eq!(vehicles, 2, "8 x 5/20");
        assert!(s.windows(2).all(|w| w[0].id < w[1].id), "file order kept");
        assert_eq!(
            s,
            select_prompts(all.clone(), &spec("stratified"), 3).unwrap()
        );
        assert_eq!(
            select_prompts(all.clone(), &spec("random"), 3)
                .unwrap()
                .len(),
            8
        );
        assert_eq!(
            select_prompts(all.clone(), &spec("first"), 3).unwrap()[7].id,
            "p0007"
        );
        let mut too_many = spec("first");
        too_many.count = 30;
        assert!(select_prompts(all, &too_many, 3).is_err());
    }
}
