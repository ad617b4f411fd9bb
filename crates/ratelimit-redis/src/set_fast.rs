//! The fast path of a set check: Lua written for one set, inserted into
//! `lua/set.lua` at `--@FAST_CHECK@`.
//!
//! Inside Redis's Lua, a decision's cost is its interpreted steps: every
//! lookup of a per-policy table, every call, every string. The generic
//! `check` of `lua/set.lua` looks up each policy's kind and parameters and
//! goes through tables for its state and decision; this check, written
//! for the set, holds its parameters and section ids as constants and its
//! numbers in locals, and calls the same per-algorithm functions
//! (`decide_fw`, `decide_sw`, `decide_tb`, `expiry_after`, `store`), so
//! that the two decide alike. It takes only the common layout (a value
//! never written, or the set's own sections first, no lease expired,
//! nothing after them); anything else goes the generic way.

use ratelimit_core::{Limit, Policy, PolicySet};

/// One policy as the fast path sees it.
enum Part {
    Fixed {
        limit: u64,
        window: u64,
    },
    Sliding {
        limit: u64,
        window: u64,
    },
    Bucket {
        interval: u64,
        span: u64,
        ledger: bool,
    },
    Leases {
        limit: u64,
        ttl: u64,
    },
}

impl Part {
    fn of(limit: &ratelimit_core::NamedLimit) -> Self {
        match limit.limit() {
            Limit::Rate(Policy::FixedWindow(p)) => Self::Fixed {
                limit: p.limit(),
                window: p.window_micros(),
            },
            Limit::Rate(Policy::SlidingWindow(p)) => Self::Sliding {
                limit: p.limit(),
                window: p.window_micros(),
            },
            Limit::Rate(Policy::TokenBucket(p)) => Self::Bucket {
                interval: p.emission_interval_micros(),
                // capacity * interval < 2^51: checked when the bucket was
                // built.
                span: p.capacity() * p.emission_interval_micros(),
                ledger: limit.keeps_ledger(),
            },
            Limit::Concurrency(c) => Self::Leases {
                limit: c.limit(),
                ttl: c.lease_ttl_micros(),
            },
        }
    }

    /// Its state's locals in the value, in order.
    fn state(&self, j: usize) -> Vec<String> {
        match self {
            Self::Fixed { .. } => vec![format!("a{j}"), format!("b{j}")],
            Self::Sliding { .. } | Self::Bucket { ledger: true, .. } => {
                vec![format!("a{j}"), format!("b{j}"), format!("z{j}")]
            }
            Self::Bucket { .. } => vec![format!("a{j}")],
            Self::Leases { .. } => vec![format!("n{j}")],
        }
    }
}

/// The Lua defining `fast_check` for `set`, whose sections have the ids
/// `ids`; `None` for a set with more than one concurrency policy (its
/// checks go the generic way).
pub(crate) fn fast_check(set: &PolicySet, ids: &[u64]) -> Option<String> {
    let parts: Vec<Part> = set.limits().iter().map(Part::of).collect();
    let leases: Vec<usize> = (0..parts.len())
        .filter(|&j| matches!(parts[j], Part::Leases { .. }))
        .collect();
    if leases.len() > 1 {
        return None;
    }
    // The value's sections: the rate policies in set order, then the
    // concurrency policy (as HEAD in lua/set.lua).
    let order: Vec<usize> = (0..parts.len())
        .filter(|j| !leases.contains(j))
        .chain(leases.iter().copied())
        .collect();
    let mut l = String::new();
    let mut line = |s: String| {
        l.push_str(&s);
        l.push('\n');
    };
    line("fast_check = function(k, v, pos)".into());
    line("  if v and type(v) ~= 'string' then return nil end".into());
    line("  local now".into());
    line("  if injected then now, pos = decode('<d', blob, pos) else now = server_now end".into());

    // The argument: per policy its cost; a concurrency policy's then its
    // id slot.
    let (mut format, mut names) = (String::new(), Vec::new());
    let flush_args =
        |format: &mut String, names: &mut Vec<String>, line: &mut dyn FnMut(String)| {
            if !names.is_empty() {
                line(format!("  local {}", names.join(", ")));
                line(format!(
                    "  {}, pos = decode('<{format}', blob, pos)",
                    names.join(", ")
                ));
                format.clear();
                names.clear();
            }
        };
    for (j, part) in parts.iter().enumerate() {
        format.push('d');
        names.push(format!("c{j}"));
        if let Part::Leases { .. } = part {
            format.push('B');
            names.push(format!("f{j}"));
            flush_args(&mut format, &mut names, &mut line);
            line(format!("  local w{j}a, w{j}b, w{j}c, w{j}d"));
            line(format!(
                "  if f{j} == 1 then w{j}a, w{j}b, w{j}c, w{j}d, pos = decode('<I4I4I4I4', blob, pos) end"
            ));
        }
    }
    flush_args(&mut format, &mut names, &mut line);

    // The state: zeros for a value never written.
    let state: Vec<String> = order.iter().flat_map(|&j| parts[j].state(j)).collect();
    line(format!(
        "  local e, {}, rest_at = 0, {}, 1",
        state.join(", "),
        vec!["0"; state.len()].join(", ")
    ));
    let mut head = vec!["version".to_owned(), "e".to_owned()];
    for &j in &order {
        head.push(format!("i{j}"));
        head.extend(parts[j].state(j));
    }
    head.push("rest_at".to_owned());
    line("  if v then".into());
    line("    if #v < FSIZE then return nil end".into());
    line(format!(
        "    local version, {}",
        order
            .iter()
            .map(|j| format!("i{j}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    line(format!("    {} = decode(HEAD, v)", head.join(", ")));
    let same: Vec<String> = order
        .iter()
        .map(|&j| format!("i{j} ~= {}", ids[j]))
        .collect();
    line(format!(
        "    if version ~= VERSION or {} then return nil end",
        same.join(" or ")
    ));
    match leases.first() {
        Some(&j) => line(format!(
            "    if n{j} < 0 or n{j} ~= floor(n{j}) or rest_at + n{j} * LEASE ~= #v + 1 then return nil end"
        )),
        None => line("    if rest_at ~= #v + 1 then return nil end".into()),
    }
    line("  else".into());
    line("    v = ''".into());
    line("  end".into());

    // The leases held (none expired: the generic check drops those).
    if let Some(&j) = leases.first() {
        line(format!("  local h{j}, first{j}, last{j} = 0, false, false"));
        line(format!(
            "  for i = rest_at + 16, rest_at + n{j} * LEASE - 1, LEASE do"
        ));
        line("    local x = decode('<d', v, i)".into());
        line("    if x <= now then return nil end".into());
        line(format!("    h{j} = h{j} + 1"));
        line(format!(
            "    if not first{j} or x < first{j} then first{j} = x end"
        ));
        line(format!(
            "    if not last{j} or x > last{j} then last{j} = x end"
        ));
        line("  end".into());
    }

    // Each policy's decision, as check() makes it.
    for (j, part) in parts.iter().enumerate() {
        let d = format!("ok{j}, rem{j}, rst{j}, rty{j}");
        match *part {
            Part::Fixed { limit, window } => line(format!(
                "  local {d}, xa{j}, xb{j} = decide_fw({limit}, {window}, a{j}, b{j}, now, c{j})"
            )),
            Part::Sliding { limit, window } => line(format!(
                "  local {d}, xa{j}, xb{j}, xz{j} = decide_sw({limit}, {window}, {}, a{j}, b{j}, z{j}, now, c{j})",
                window / 1000
            )),
            Part::Bucket { interval, span, ledger } => {
                let t = if ledger {
                    line(format!("  local t{j} = max(now, z{j})"));
                    format!("t{j}")
                } else {
                    "now".to_owned()
                };
                line(format!(
                    "  local {d}, xa{j} = decide_tb({interval}, {span}, a{j}, {t}, c{j})"
                ));
            }
            Part::Leases { limit, ttl } => {
                line(format!("  local {d}"));
                line(format!("  if c{j} > 0 and h{j} < {limit} then"));
                line(format!(
                    "    ok{j}, rem{j}, rst{j}, rty{j} = true, {limit} - h{j} - 1, max(max(last{j} or 0, now + {ttl}) - now, 0), 0"
                ));
                line("  else".into());
                line(format!(
                    "    ok{j}, rem{j} = h{j} < {limit} and c{j} == 0, max({limit} - h{j}, 0)"
                ));
                line(format!(
                    "    rst{j}, rty{j} = max((last{j} or now) - now, 0), max((first{j} or now) - now, 0)"
                ));
                line("  end".into());
            }
        }
    }

    // The reply, as CHECKED lays it out.
    let all: Vec<String> = (0..parts.len()).map(|j| format!("ok{j}")).collect();
    line(format!("  local all = {}", all.join(" and ")));
    line("  local o = no".into());
    line("  if all then out[o + 1] = 0 else out[o + 1] = 3 end".into());
    let mut o = 2;
    let mut expiry_at = None;
    for (j, part) in parts.iter().enumerate() {
        line(format!(
            "  if ok{j} then out[o + {o}] = -1 else out[o + {o}] = rty{j} end"
        ));
        let marks = match *part {
            Part::Fixed { .. } | Part::Sliding { .. } => format!("xa{j}"),
            Part::Bucket { ledger: true, .. } => format!("xa{j}, b{j}, t{j}"),
            Part::Bucket { .. } => format!("xa{j}, 0, now"),
            Part::Leases { .. } => {
                expiry_at = Some(o + 3);
                "0".to_owned()
            }
        };
        let values = format!("rem{j}, rst{j}, {marks}");
        let n = values.split(", ").count();
        let slots: Vec<String> = (1..=n).map(|i| format!("out[o + {}]", o + i)).collect();
        line(format!("  {} = {values}", slots.join(", ")));
        o += n + 1;
    }
    line(format!("  no = o + {}", o - 1));
    line("  fmts[#fmts + 1] = CHECKED".into());
    line("  if not all then return pos end".into());

    // The writes, as write_rate and add_lease make them.
    line("  local latest, dirty = 0, false".into());
    for (j, part) in parts.iter().enumerate() {
        match *part {
            Part::Fixed { window, .. } => {
                line(format!("  if xa{j} ~= a{j} or xb{j} ~= b{j} then"));
                line("    dirty = true".into());
                line(format!(
                    "    if xb{j} > 0 then latest = max(latest, (xa{j} + 1) * {window}) end"
                ));
                line("  end".into());
            }
            Part::Sliding { window, .. } => {
                line(format!(
                    "  if xa{j} ~= a{j} or xb{j} ~= b{j} or xz{j} ~= z{j} then"
                ));
                line("    dirty = true".into());
                line(format!("    local start = xa{j} * {window}"));
                line(format!(
                    "    if xz{j} > 0 then latest = max(latest, start + 2 * {window}) elseif xb{j} > 0 then latest = max(latest, start + {window}) end"
                ));
                line("  end".into());
            }
            Part::Bucket { ledger, .. } => {
                if ledger {
                    line(format!("  if xa{j} ~= a{j} or t{j} ~= z{j} then"));
                } else {
                    line(format!("  if xa{j} ~= a{j} then"));
                }
                line("    dirty = true".into());
                line(format!("    latest = max(latest, xa{j})"));
                line("  end".into());
            }
            Part::Leases { ttl, .. } => {
                line("  local rest = ''".into());
                line(format!("  if n{j} > 0 then rest = sub(v, rest_at) end"));
                line(format!("  if c{j} > 0 then"));
                line(format!("    local expiry = now + {ttl}"));
                line(format!(
                    "    rest = rest .. encode(LEASE_FMT, w{j}a, w{j}b, w{j}c, w{j}d, expiry)"
                ));
                line(format!("    n{j} = h{j} + 1"));
                if let Some(at) = expiry_at {
                    line(format!("    out[o + {at}] = expiry"));
                }
                line("    dirty = true".into());
                line(format!("    latest = max(latest, last{j} or 0, expiry)"));
                line("  end".into());
            }
        }
    }
    if leases.is_empty() {
        line("  local rest = ''".into());
    }
    line("  if not dirty then return pos end".into());
    line("  local e2 = expiry_after(e, latest, now)".into());
    let mut body = vec!["VERSION".to_owned(), "e2".to_owned()];
    for &j in &order {
        body.push(ids[j].to_string());
        body.extend(match parts[j] {
            Part::Fixed { .. } => vec![format!("xa{j}"), format!("xb{j}")],
            Part::Sliding { .. } => vec![format!("xa{j}"), format!("xb{j}"), format!("xz{j}")],
            Part::Bucket { ledger: true, .. } => {
                vec![format!("xa{j}"), format!("b{j}"), format!("t{j}")]
            }
            Part::Bucket { .. } => vec![format!("xa{j}")],
            Part::Leases { .. } => vec![format!("n{j}")],
        });
    }
    body.push("rest".to_owned());
    line(format!("  local value = encode(BODY, {})", body.join(", ")));
    line("  store(k, value, e, e2, latest, now)".into());
    line("  return pos, value".into());
    line("end".into());
    Some(l)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ratelimit_core::{Concurrency, NamedLimit};

    use super::*;
    use crate::keys::set_ids;

    fn named(name: &str, limit: impl Into<Limit>) -> NamedLimit {
        NamedLimit::new(name, limit).unwrap()
    }

    #[test]
    fn one_concurrency_policy_at_most_takes_the_fast_path() {
        let minute = Duration::from_secs(60);
        let set = PolicySet::new(vec![
            named("requests", Policy::fixed_window(10, minute).unwrap()),
            named("tokens", Policy::token_bucket(100, 100, minute).unwrap()).settling(),
            named("streams", Concurrency::new(2, minute).unwrap()),
        ])
        .unwrap();
        let code = fast_check(&set, &set_ids(&set)).expect("one concurrency policy");
        // Constants in the code: the fixed window's parameters, the
        // sections' ids.
        assert!(
            code.contains("decide_fw(10, 60000000, a0, b0, now, c0)"),
            "{code}"
        );
        for id in set_ids(&set) {
            assert!(code.contains(&format!(" ~= {id}")), "{code}");
        }
        let two = PolicySet::new(vec![
            named("a", Concurrency::new(2, minute).unwrap()),
            named("b", Concurrency::new(2, minute).unwrap()),
        ])
        .unwrap();
        assert!(fast_check(&two, &set_ids(&two)).is_none());
    }
}
