//! The PCS signals of SPEC.md section 7: D-hat (Theil-Sen), budget, regime and coh-star.
//!
//! Every float step is one binary64 operation in the spec's order (Rust never fuses a
//! multiply-add unless asked), `max`/`min` are Python's (the first argument unless the second
//! is strictly better), and coh-star draws its directions from SplitMix64.

use serde_json::{json, Value};

use crate::{fmt9, invalid, number, Invalid};

fn finite(v: &Value, name: &str) -> Result<f64, Invalid> {
    match number(v) {
        Ok(x) if x.is_finite() => Ok(x), // {"f64": ...} may spell NaN or an infinity
        Ok(_) => invalid(&format!("{}: NaN and Infinity are not allowed", name)),
        Err(Invalid(why)) => invalid(&format!("{}: {}", name, why)),
    }
}

fn unit(v: &Value, name: &str) -> Result<f64, Invalid> {
    let x = finite(v, name)?;
    if (0.0..=1.0).contains(&x) { Ok(x) } else { invalid(&format!("{} must be in [0, 1]", name)) }
}

/// An integer literal (no fraction, no exponent) in [low, high], as its decimal text.
fn integer_text(v: &Value, name: &str) -> Result<String, Invalid> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        _ => return invalid(&format!("{} must be an integer", name)),
    };
    let digits = text.strip_prefix('-').unwrap_or(&text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return invalid(&format!("{} must be an integer", name));
    }
    Ok(text)
}

fn bounded(v: &Value, name: &str, low: u64, high: u64) -> Result<u64, Invalid> {
    let text = integer_text(v, name)?;
    match text.parse::<u64>() {
        Ok(x) if (low..=high).contains(&x) => Ok(x),
        _ => invalid(&format!("{} must be an integer in [{}, {}]", name, low, high)),
    }
}

/// A list of integers >= `low`, each as the nearest binary64 (Python's float(int)).
fn int_list(v: &Value, name: &str, low: i64) -> Result<Vec<f64>, Invalid> {
    let items = match v {
        Value::Array(items) => items,
        _ => return invalid(&format!("{} must be a list of integers", name)),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let text = integer_text(item, name)?;
        let negative = text.starts_with('-');
        let too_small = match text.parse::<i64>() {
            Ok(x) => x < low,
            Err(_) => negative, // beyond i64: below low iff negative
        };
        if too_small {
            return invalid(&format!("{} entries must be >= {}", name, low));
        }
        out.push(text.parse::<f64>().map_err(|_| Invalid(format!("{} entry", name)))?);
    }
    Ok(out)
}

fn py_max(a: f64, b: f64) -> f64 {
    if b > a { b } else { a }
}

fn py_min(a: f64, b: f64) -> f64 {
    if b < a { b } else { a }
}

/// Theil-Sen slope of log2(N_j) on log2(scale): the true median (legacy-0.1: the upper one).
pub fn d_hat(input: &Value, legacy: bool) -> Result<f64, Invalid> {
    let scales = int_list(crate::field(input, "scales")?, "scales", 2)?;
    let counts = int_list(crate::field(input, "n_j")?, "N_j", 1)?;
    if !(2..=64).contains(&scales.len()) {
        return invalid("scales: needs between 2 and 64 scales");
    }
    if counts.len() != scales.len() {
        return invalid("N_j: one count per scale");
    }
    if scales.windows(2).any(|w| w[1] <= w[0]) {
        return invalid("scales must be strictly increasing");
    }
    let xs: Vec<f64> = scales.iter().map(|s| s.log2()).collect();
    let ys: Vec<f64> = counts.iter().map(|n| n.log2()).collect();
    let mut slopes = Vec::new();
    for i in 0..xs.len() {
        for j in i + 1..xs.len() {
            slopes.push((ys[j] - ys[i]) / (xs[j] - xs[i]));
        }
    }
    slopes.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let m = slopes.len();
    Ok(if legacy || m % 2 == 1 { slopes[m / 2] } else { (slopes[m / 2 - 1] + slopes[m / 2]) / 2.0 })
}

/// ((base + alpha*(1-r)) + beta*max(0, D-D0)) + gamma*coh, clamped to [0, 1].
pub fn budget(input: &Value) -> Result<f64, Invalid> {
    let (mut base, mut alpha, mut beta, mut gamma, mut d0) = (0.10, 0.30, 0.50, 0.20, 2.2);
    match input.get("params") {
        None | Some(Value::Null) => {}
        Some(Value::Object(given)) => {
            for (name, v) in given {
                let slot = match name.as_str() {
                    "base" => &mut base,
                    "alpha" => &mut alpha,
                    "beta" => &mut beta,
                    "gamma" => &mut gamma,
                    "d0" => &mut d0,
                    _ => return invalid(&format!("params.{}: unknown budget parameter", name)),
                };
                let x = finite(v, &format!("params.{}", name))?;
                if matches!(name.as_str(), "alpha" | "beta" | "gamma") && x < 0.0 {
                    return invalid(&format!("params.{} must be >= 0", name));
                }
                *slot = x;
            }
        }
        Some(_) => return invalid("params must be an object"),
    }
    let dimension = finite(crate::field(input, "D_hat")?, "D_hat")?;
    let coherence = unit(crate::field(input, "coh_star")?, "coh_star")?;
    let ratio = unit(crate::field(input, "r")?, "r")?;
    let mut value = base + alpha * (1.0 - ratio);
    value = value + beta * py_max(0.0, dimension - d0);
    value = value + gamma * coherence;
    Ok(py_min(1.0, py_max(0.0, value)))
}

pub fn regime(input: &Value) -> Result<&'static str, Invalid> {
    let dimension = finite(crate::field(input, "D_hat")?, "D_hat")?;
    let coherence = unit(crate::field(input, "coh_star")?, "coh_star")?;
    Ok(if coherence >= 0.7 && dimension <= 1.5 {
        "sticky"
    } else if dimension >= 2.6 {
        "non_sticky"
    } else {
        "mixed"
    })
}

/// SplitMix64 (SPEC.md section 7.3) as doubles in [0, 1): the top 53 bits times 2^-53.
struct SplitMix64(u64);

impl SplitMix64 {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^= z >> 31;
        (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// n rows of d numbers (1 <= d <= 8); a list of numbers is n rows of one.
fn point_rows(v: &Value) -> Result<Vec<Vec<f64>>, Invalid> {
    let items = match v {
        Value::Array(items) => items,
        _ => return invalid("points must be a numeric array of shape (n, d)"),
    };
    let mut rows: Vec<Vec<f64>> = Vec::with_capacity(items.len());
    let first_is_list = matches!(items.first(), Some(Value::Array(_)));
    for item in items {
        let cells: Vec<&Value> = match item {
            Value::Array(cells) if first_is_list => cells.iter().collect(),
            Value::Array(_) => return invalid("points must be a numeric array of shape (n, d)"),
            _ if first_is_list => return invalid("points must be a numeric array of shape (n, d)"),
            other => vec![other],
        };
        if cells.is_empty() || cells.len() > 8 || rows.first().map_or(false, |r| r.len() != cells.len()) {
            return invalid("points must have shape (n, d) with 1 <= d <= 8");
        }
        rows.push(cells.into_iter().map(|c| finite(c, "points")).collect::<Result<_, _>>()?);
    }
    Ok(rows)
}

/// Per-dimension min-max normalisation to [0, 1]; a zero-width dimension maps to 0.
fn normalise(rows: &[Vec<f64>]) -> Result<Vec<Vec<f64>>, Invalid> {
    let dim = rows.first().map_or(0, |r| r.len());
    let mut out = vec![vec![0.0; dim]; rows.len()];
    for k in 0..dim {
        let low = rows.iter().map(|r| r[k]).fold(f64::INFINITY, f64::min);
        let high = rows.iter().map(|r| r[k]).fold(f64::NEG_INFINITY, f64::max);
        let width = high - low;
        if width.is_infinite() {
            return invalid("points: coordinate range overflows binary64");
        }
        if width > 0.0 {
            for (o, r) in out.iter_mut().zip(rows) {
                o[k] = (r[k] - low) / width;
            }
        }
    }
    Ok(out)
}

fn directions(seed: u64, count: usize, dim: usize) -> Vec<Vec<f64>> {
    let mut rng = SplitMix64(seed);
    (0..count)
        .map(|_| loop {
            let c: Vec<f64> = (0..dim).map(|_| 2.0 * rng.uniform() - 1.0).collect();
            let mut squares = 0.0;
            for x in &c {
                squares = squares + x * x;
            }
            if squares > 0.0 && squares <= 1.0 {
                let norm = squares.sqrt();
                break c.iter().map(|x| x / norm).collect();
            }
        })
        .collect()
}

/// coh-star: the largest share of the points in one of `bins` equal bins of their projection.
pub fn coherence(input: &Value) -> Result<f64, Invalid> {
    let rows = point_rows(crate::field(input, "points")?)?;
    let seed = bounded(crate::field(input, "seed")?, "seed", 0, u64::MAX)?;
    let count = match input.get("n_directions") {
        None => 100,
        Some(v) => bounded(v, "n_directions", 1, 10_000)?,
    } as usize;
    let bins = match input.get("bins") {
        None => 20,
        Some(v) => bounded(v, "bins", 1, 10_000)?,
    } as usize;
    let points = normalise(&rows)?;
    let dim = rows.first().map_or(1, |r| r.len());
    let dirs = directions(seed, count, dim);
    if points.is_empty() {
        return Ok(0.0);
    }
    let mut best = -1.0f64;
    for v in &dirs {
        let projections: Vec<f64> = points
            .iter()
            .map(|u| {
                let mut acc = u[0] * v[0];
                for k in 1..dim {
                    acc = acc + u[k] * v[k];
                }
                acc
            })
            .collect();
        let low = projections.iter().cloned().fold(f64::INFINITY, f64::min);
        let high = projections.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let share = if high == low {
            1.0
        } else {
            let mut counts = vec![0usize; bins];
            for p in &projections {
                let bin = (((p - low) / (high - low)) * bins as f64).floor();
                counts[if bin > (bins - 1) as f64 { bins - 1 } else { bin as usize }] += 1;
            }
            *counts.iter().max().unwrap_or(&0) as f64 / points.len() as f64
        };
        if share > best {
            best = share;
        }
    }
    Ok(best)
}

pub fn op(name: &str, input: &Value, legacy: bool) -> Result<Value, Invalid> {
    Ok(match name {
        "d_hat" => json!({"d_hat": fmt9(d_hat(input, legacy)?)?}),
        "budget" => json!({"budget": fmt9(budget(input)?)?}),
        "regime" => json!({"regime": regime(input)?}),
        "coherence" => json!({"coh_star": fmt9(coherence(input)?)?}),
        _ => unreachable!(),
    })
}
