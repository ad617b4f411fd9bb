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

/// Lua source being written, a line at a time.
#[derive(Default)]
struct Lua(String);

impl Lua {
    fn line(&mut self, s: impl AsRef<str>) {
        self.0.push_str(s.as_ref());
        self.0.push('\n');
    }
}

/// The operation a fast path is written for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Check,
    Settle,
}

/// A set as the fast paths see it.
struct Set {
    parts: Vec<Part>,
    ids: Vec<u64>,
    /// Whether each policy settles.
    settles: Vec<bool>,
    /// The concurrency policy, if any.
    leases: Option<usize>,
    /// The policies in the order of their sections in a value: the rate
    /// policies in set order, then the concurrency policy (as HEAD in
    /// `lua/set.lua`).
    order: Vec<usize>,
}

/// The Lua defining `fast_check` and `fast_settle` for `set`, whose
/// sections have the ids `ids`; `None` for a set with more than one
/// concurrency policy (its operations go the generic way).
pub(crate) fn fast_paths(set: &PolicySet, ids: &[u64]) -> Option<String> {
    let parts: Vec<Part> = set.limits().iter().map(Part::of).collect();
    let leases: Vec<usize> = (0..parts.len())
        .filter(|&j| matches!(parts[j], Part::Leases { .. }))
        .collect();
    if leases.len() > 1 {
        return None;
    }
    let order = (0..parts.len())
        .filter(|j| !leases.contains(j))
        .chain(leases.iter().copied())
        .collect();
    let set = Set {
        parts,
        ids: ids.to_vec(),
        settles: set.limits().iter().map(|l| l.settles()).collect(),
        leases: leases.first().copied(),
        order,
    };
    let mut lua = Lua::default();
    set.formats(&mut lua);
    set.check(&mut lua);
    set.settle(&mut lua);
    Some(lua.0)
}

impl Set {
    /// The formats the fast paths use, as `generic()` in `lua/set.lua`
    /// makes them: a value's numbers (HEAD: the header, the rate policies'
    /// sections, the concurrency policy's id and count; FSIZE its bytes;
    /// BODY writes them and a string after), a check's reply, decisions.
    fn formats(&self, lua: &mut Lua) {
        let numbers: usize = self
            .order
            .iter()
            .map(|&j| 1 + self.parts[j].state(j).len())
            .sum();
        let head = format!("<Bd{}", "d".repeat(numbers));
        let checked: String = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Bucket { .. } => "dddddd",
                _ => "dddd",
            })
            .collect();
        lua.line(format!(
            "FSIZE, HEAD, BODY, CHECKED, DECIDED = {}, '{head}', '{head}c0', 'B{checked}', 'B{}'",
            9 + 8 * numbers,
            "ddd".repeat(self.parts.len())
        ));
    }

    /// The opening of `op`'s function: the operation's argument, then the
    /// value's numbers (zeros for a value never written), or `return nil`
    /// for a value not on the fast path's layout.
    fn open(&self, lua: &mut Lua, op: Op) {
        let name = match op {
            Op::Check => "fast_check",
            Op::Settle => "fast_settle",
        };
        lua.line(format!("{name} = function(k, v, pos)"));
        lua.line("  if v and type(v) ~= 'string' then return nil end");
        lua.line("  local now");
        lua.line("  if injected then now, pos = decode('<d', blob, pos) else now = server_now end");
        // The argument (see the calling convention): a check's costs, a
        // settle's taken, actual and marks; a concurrency policy's id
        // slot.
        let (mut format, mut names) = (String::new(), Vec::<String>::new());
        let flush = |lua: &mut Lua, format: &mut String, names: &mut Vec<String>| {
            if !names.is_empty() {
                lua.line(format!("  local {}", names.join(", ")));
                lua.line(format!(
                    "  {}, pos = decode('<{format}', blob, pos)",
                    names.join(", ")
                ));
                format.clear();
                names.clear();
            }
        };
        for (j, part) in self.parts.iter().enumerate() {
            match (part, op) {
                (Part::Leases { .. }, _) => {
                    if op == Op::Check {
                        format.push('d');
                        names.push(format!("c{j}"));
                    }
                    format.push('B');
                    names.push(format!("f{j}"));
                    flush(lua, &mut format, &mut names);
                    lua.line(format!("  local w{j}a, w{j}b, w{j}c, w{j}d"));
                    lua.line(format!(
                        "  if f{j} == 1 then w{j}a, w{j}b, w{j}c, w{j}d, pos = decode('<I4I4I4I4', blob, pos) end"
                    ));
                }
                (_, Op::Check) => {
                    format.push('d');
                    names.push(format!("c{j}"));
                }
                (_, Op::Settle) => {
                    format.push_str("ddddd");
                    names.extend(["tk", "ac", "ma", "mb", "mc"].map(|n| format!("{n}{j}")));
                }
            }
        }
        flush(lua, &mut format, &mut names);

        // The value's numbers.
        let state: Vec<String> = self
            .order
            .iter()
            .flat_map(|&j| self.parts[j].state(j))
            .collect();
        lua.line(format!(
            "  local e, {}, rest_at = 0, {}, 1",
            state.join(", "),
            vec!["0"; state.len()].join(", ")
        ));
        let mut head = vec!["version".to_owned(), "e".to_owned()];
        for &j in &self.order {
            head.push(format!("i{j}"));
            head.extend(self.parts[j].state(j));
        }
        head.push("rest_at".to_owned());
        lua.line("  if v then");
        lua.line("    if #v < FSIZE then return nil end");
        let ids: Vec<String> = self.order.iter().map(|j| format!("i{j}")).collect();
        lua.line(format!("    local version, {}", ids.join(", ")));
        lua.line(format!("    {} = decode(HEAD, v)", head.join(", ")));
        let same: Vec<String> = self
            .order
            .iter()
            .map(|&j| format!("i{j} ~= {}", self.ids[j]))
            .collect();
        lua.line(format!(
            "    if version ~= VERSION or {} then return nil end",
            same.join(" or ")
        ));
        match self.leases {
            Some(j) => lua.line(format!(
                "    if n{j} < 0 or n{j} ~= floor(n{j}) or rest_at + n{j} * LEASE ~= #v + 1 then return nil end"
            )),
            None => lua.line("    if rest_at ~= #v + 1 then return nil end"),
        }
        lua.line("  else");
        lua.line("    v = ''");
        lua.line("  end");
    }

    /// The end of an operation's function: the value written, if `dirty`,
    /// its policies' states `states` (per policy in section order, the
    /// names of its numbers) and its leases in `rest`.
    fn close(&self, lua: &mut Lua, states: &[Vec<String>]) {
        lua.line("  if not dirty then return pos end");
        lua.line("  local e2 = expiry_after(e, latest, now)");
        let mut body = vec!["VERSION".to_owned(), "e2".to_owned()];
        for &j in &self.order {
            body.push(self.ids[j].to_string());
            body.extend(states[j].iter().cloned());
        }
        body.push("rest".to_owned());
        lua.line(format!("  local value = encode(BODY, {})", body.join(", ")));
        lua.line("  store(k, value, e, e2, latest, now)");
        lua.line("  return pos, value");
        lua.line("end");
    }

    /// A rate policy's write, as write_rate makes it: `new` its state
    /// after the operation, `old` as read.
    fn write_rate(lua: &mut Lua, part: &Part, new: &[String], old: &[String]) {
        let changed: Vec<String> = new
            .iter()
            .zip(old)
            .filter(|(n, o)| n != o)
            .map(|(n, o)| format!("{n} ~= {o}"))
            .collect();
        if changed.is_empty() {
            return;
        }
        lua.line(format!("  if {} then", changed.join(" or ")));
        lua.line("    dirty = true");
        match *part {
            Part::Fixed { window, .. } => lua.line(format!(
                "    if {b} > 0 then latest = max(latest, ({a} + 1) * {window}) end",
                a = new[0],
                b = new[1]
            )),
            Part::Sliding { window, .. } => lua.line(format!(
                "    if {c} > 0 then latest = max(latest, {a} * {window} + 2 * {window}) \
                 elseif {b} > 0 then latest = max(latest, {a} * {window} + {window}) end",
                a = new[0],
                b = new[1],
                c = new[2]
            )),
            Part::Bucket { .. } => lua.line(format!("    latest = max(latest, {})", new[0])),
            Part::Leases { .. } => {}
        }
        lua.line("  end");
    }

    /// `fast_check`: PolicySet::check, as check() decides it.
    fn check(&self, lua: &mut Lua) {
        self.open(lua, Op::Check);
        // The leases held (none expired: the generic check drops those).
        if let Some(j) = self.leases {
            lua.line(format!(
                "  local h{j}, first{j}, last{j}, _, kept{j} = scan_block(v, rest_at, n{j}, now, false)"
            ));
            lua.line(format!("  if kept{j} then return nil end"));
        }
        for (j, part) in self.parts.iter().enumerate() {
            let d = format!("ok{j}, rem{j}, rst{j}, rty{j}");
            match *part {
                Part::Fixed { limit, window } => lua.line(format!(
                    "  local {d}, xa{j}, xb{j} = decide_fw({limit}, {window}, a{j}, b{j}, now, c{j})"
                )),
                Part::Sliding { limit, window } => lua.line(format!(
                    "  local {d}, xa{j}, xb{j}, xz{j} = decide_sw({limit}, {window}, {}, a{j}, b{j}, z{j}, now, c{j})",
                    window / 1000
                )),
                Part::Bucket {
                    interval,
                    span,
                    ledger,
                } => {
                    // A bucket keeping a ledger applies no instant before
                    // its `seen`.
                    let t = if ledger {
                        lua.line(format!("  local t{j} = max(now, z{j})"));
                        format!("t{j}")
                    } else {
                        "now".to_owned()
                    };
                    lua.line(format!(
                        "  local {d}, xa{j} = decide_tb({interval}, {span}, a{j}, {t}, c{j})"
                    ));
                }
                Part::Leases { limit, ttl } => {
                    lua.line(format!("  local {d}"));
                    lua.line(format!("  if c{j} > 0 and h{j} < {limit} then"));
                    lua.line(format!(
                        "    ok{j}, rem{j}, rst{j}, rty{j} = true, {limit} - h{j} - 1, max(max(last{j} or 0, now + {ttl}) - now, 0), 0"
                    ));
                    lua.line("  else");
                    lua.line(format!(
                        "    ok{j}, rem{j} = h{j} < {limit} and c{j} == 0, max({limit} - h{j}, 0)"
                    ));
                    lua.line(format!(
                        "    rst{j}, rty{j} = max((last{j} or now) - now, 0), max((first{j} or now) - now, 0)"
                    ));
                    lua.line("  end");
                }
            }
        }

        // The reply, as CHECKED lays it out.
        let all: Vec<String> = (0..self.parts.len()).map(|j| format!("ok{j}")).collect();
        lua.line(format!("  local all = {}", all.join(" and ")));
        lua.line("  local o = no");
        lua.line("  if all then out[o + 1] = 0 else out[o + 1] = 3 end");
        let mut o = 2;
        let mut expiry_at = 0;
        for (j, part) in self.parts.iter().enumerate() {
            lua.line(format!(
                "  if ok{j} then out[o + {o}] = -1 else out[o + {o}] = rty{j} end"
            ));
            let mut values = vec![format!("rem{j}"), format!("rst{j}")];
            match *part {
                Part::Fixed { .. } | Part::Sliding { .. } => values.push(format!("xa{j}")),
                Part::Bucket { ledger: true, .. } => {
                    values.extend([format!("xa{j}"), format!("b{j}"), format!("t{j}")]);
                }
                Part::Bucket { .. } => values.extend([format!("xa{j}"), "0".into(), "now".into()]),
                Part::Leases { .. } => {
                    expiry_at = o + 3;
                    values.push("0".into());
                }
            }
            let slots: Vec<String> = (1..=values.len())
                .map(|i| format!("out[o + {}]", o + i))
                .collect();
            lua.line(format!("  {} = {}", slots.join(", "), values.join(", ")));
            o += values.len() + 1;
        }
        lua.line(format!("  no = o + {}", o - 1));
        lua.line("  fmts[#fmts + 1] = CHECKED");
        lua.line("  if not all then return pos end");

        // The writes, as write_rate and add_lease make them.
        lua.line("  local latest, dirty = 0, false");
        let mut states = vec![Vec::new(); self.parts.len()];
        for (j, part) in self.parts.iter().enumerate() {
            let old = part.state(j);
            let new: Vec<String> = match *part {
                Part::Bucket { ledger: true, .. } => {
                    vec![format!("xa{j}"), format!("b{j}"), format!("t{j}")]
                }
                Part::Leases { .. } => old.clone(),
                _ => old.iter().map(|n| format!("x{n}")).collect(),
            };
            Self::write_rate(lua, part, &new, &old);
            states[j] = new;
        }
        match self.leases {
            Some(j) => {
                let Part::Leases { ttl, .. } = self.parts[j] else {
                    unreachable!("the concurrency policy")
                };
                lua.line("  local rest = ''");
                lua.line(format!("  if n{j} > 0 then rest = sub(v, rest_at) end"));
                lua.line(format!("  if c{j} > 0 then"));
                lua.line(format!("    local expiry = now + {ttl}"));
                lua.line(format!(
                    "    rest = rest .. encode(LEASE_FMT, w{j}a, w{j}b, w{j}c, w{j}d, expiry)"
                ));
                lua.line(format!("    n{j} = h{j} + 1"));
                lua.line(format!("    out[o + {expiry_at}] = expiry"));
                lua.line("    dirty = true");
                lua.line(format!("    latest = max(latest, last{j} or 0, expiry)"));
                lua.line("  end");
            }
            None => lua.line("  local rest = ''"),
        }
        self.close(lua, &states);
    }

    /// `fast_settle`: PolicySet::settle, as settle() decides it; a settle
    /// refused goes the generic way.
    fn settle(&self, lua: &mut Lua) {
        self.open(lua, Op::Settle);
        // Forgets the expired leases and frees this one.
        if let Some(j) = self.leases {
            lua.line(format!(
                "  local h{j}, first{j}, last{j}, _, kept{j} = scan_block(v, rest_at, n{j}, now, f{j} == 1, w{j}a, w{j}b, w{j}c, w{j}d)"
            ));
        }
        let mut states = vec![Vec::new(); self.parts.len()];
        for (j, part) in self.parts.iter().enumerate() {
            let d = format!("ok{j}, rem{j}, rst{j}, rty{j}");
            let settled = format!("ac{j} ~= tk{j}");
            let not_settling = |lua: &mut Lua| {
                if !self.settles[j] {
                    lua.line(format!("  if {settled} then return nil end"));
                }
            };
            match *part {
                Part::Fixed { limit, window } | Part::Sliding { limit, window } => {
                    let sliding = matches!(part, Part::Sliding { .. });
                    not_settling(lua);
                    let c = if sliding { format!("z{j}") } else { "0".into() };
                    lua.line(format!("  local sa{j}, sb{j}, sc{j} = a{j}, b{j}, {c}"));
                    lua.line(format!("  if {settled} then"));
                    lua.line("    local done");
                    lua.line(format!(
                        "    done, sa{j}, sb{j}, sc{j} = settle_window({sliding}, {window}, {}, a{j}, b{j}, {c}, now, tk{j}, ac{j}, ma{j})",
                        window / 1000
                    ));
                    lua.line("    if not done then return nil end");
                    lua.line("  end");
                    if sliding {
                        lua.line(format!(
                            "  local {d} = decide_sw({limit}, {window}, {}, sa{j}, sb{j}, sc{j}, now, 0)",
                            window / 1000
                        ));
                        states[j] = vec![format!("sa{j}"), format!("sb{j}"), format!("sc{j}")];
                    } else {
                        lua.line(format!(
                            "  local {d} = decide_fw({limit}, {window}, sa{j}, sb{j}, now, 0)"
                        ));
                        states[j] = vec![format!("sa{j}"), format!("sb{j}")];
                    }
                }
                Part::Bucket {
                    interval,
                    span,
                    ledger: false,
                } => {
                    // Settles only what it took.
                    lua.line(format!("  if {settled} then return nil end"));
                    lua.line(format!(
                        "  local {d} = decide_tb({interval}, {span}, a{j}, now, 0)"
                    ));
                    states[j] = vec![format!("a{j}")];
                }
                Part::Bucket { interval, span, .. } => {
                    lua.line(format!(
                        "  local sa{j}, sb{j}, sc{j}, st{j} = a{j}, b{j}, z{j}, now"
                    ));
                    lua.line(format!("  if {settled} then"));
                    lua.line("    local done");
                    lua.line(format!(
                        "    done, sa{j}, sb{j}, sc{j} = settle_bucket({interval}, a{j}, b{j}, z{j}, now, tk{j}, ac{j}, ma{j}, mb{j}, mc{j})"
                    ));
                    lua.line("    if not done then return nil end");
                    lua.line(format!("    st{j} = sc{j}"));
                    lua.line("  end");
                    lua.line(format!(
                        "  local {d} = decide_tb({interval}, {span}, sa{j}, st{j}, 0)"
                    ));
                    states[j] = vec![format!("sa{j}"), format!("sb{j}"), format!("sc{j}")];
                }
                Part::Leases { limit, .. } => {
                    lua.line(format!(
                        "  local {d} = h{j} < {limit}, max({limit} - h{j}, 0), max((last{j} or now) - now, 0), max((first{j} or now) - now, 0)"
                    ));
                    states[j] = vec![format!("n{j}")];
                }
            }
        }

        // The reply, as DECIDED lays it out.
        lua.line("  local o = no");
        lua.line("  out[o + 1] = 0");
        for j in 0..self.parts.len() {
            let o = 2 + 3 * j;
            lua.line(format!(
                "  if ok{j} then out[o + {o}] = -1 else out[o + {o}] = rty{j} end"
            ));
            lua.line(format!(
                "  out[o + {}], out[o + {}] = rem{j}, rst{j}",
                o + 1,
                o + 2
            ));
        }
        lua.line(format!("  no = o + {}", 1 + 3 * self.parts.len()));
        lua.line("  fmts[#fmts + 1] = DECIDED");

        // The writes, as write_rate and scan make them.
        lua.line("  local latest, dirty = 0, false");
        for (j, part) in self.parts.iter().enumerate() {
            if !matches!(part, Part::Leases { .. }) {
                let mut old = part.state(j);
                if let Part::Fixed { .. } = part {
                    old.truncate(2);
                }
                Self::write_rate(lua, part, &states[j], &old);
            }
        }
        match self.leases {
            Some(j) => {
                lua.line(format!("  local rest = kept{j}"));
                lua.line("  if rest then");
                lua.line(format!("    n{j} = h{j}"));
                lua.line("    dirty = true");
                lua.line(format!(
                    "    if last{j} then latest = max(latest, last{j}) end"
                ));
                lua.line("  else");
                lua.line("    rest = ''");
                lua.line(format!("    if n{j} > 0 then rest = sub(v, rest_at) end"));
                lua.line("  end");
            }
            None => lua.line("  local rest = ''"),
        }
        self.close(lua, &states);
    }
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
        let code = fast_paths(&set, &set_ids(&set)).expect("one concurrency policy");
        // The formats: the header (a byte, the expiry), then 9 numbers (3
        // ids, 2 + 3 numbers of state, 1 count of leases); a check's reply
        // 4 + 6 + 4 numbers, decisions 3 each.
        let (head, checked) = (format!("<B{}", "d".repeat(10)), "d".repeat(14));
        assert!(
            code.starts_with(&format!(
                "FSIZE, HEAD, BODY, CHECKED, DECIDED = 81, '{head}', '{head}c0', 'B{checked}', 'B{}'\n",
                "d".repeat(9)
            )),
            "{code}"
        );
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
        assert!(fast_paths(&two, &set_ids(&two)).is_none());
    }
}
