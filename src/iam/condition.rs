//! Evaluation of `Condition` blocks against the request context.

use std::net::IpAddr;

use super::eval::RequestContext;
use super::pattern::{Resolver, Tok, arn_match, compile, glob_str};
use super::policy::{
    BaseOperator, ConditionBlock, ConditionEntry, ConditionOperator, SetQualifier,
};
use super::values::{parse_cidr, parse_date_millis, parse_number};

/// All entries of a block must hold.
pub(crate) fn block_matches(
    block: &ConditionBlock,
    ctx: &RequestContext<'_>,
    vars: Option<Resolver<'_>>,
) -> bool {
    block
        .entries
        .iter()
        .all(|e| entry_matches(block.operator, e, ctx, vars))
}

fn entry_matches(
    op: ConditionOperator,
    entry: &ConditionEntry,
    ctx: &RequestContext<'_>,
    vars: Option<Resolver<'_>>,
) -> bool {
    let request = ctx.key_values(&entry.key);
    if op.base == BaseOperator::Null {
        // "true": the key must be absent; "false": it must be present.
        let present = request.is_some();
        return entry
            .values
            .iter()
            .any(|v| v.eq_ignore_ascii_case("true") != present);
    }
    let negated = op.base.is_negated();
    let Some(request) = request else {
        return match op.qualifier {
            None => op.if_exists || negated,
            Some(SetQualifier::ForAnyValue) => op.if_exists,
            Some(SetQualifier::ForAllValues) => true,
        };
    };
    let matcher = ValueMatcher::new(op.base, &entry.values, vars);
    // Per request value: does it satisfy the operator? A request value of the
    // wrong type (e.g. a non-number for NumericLessThan) never does.
    let satisfies = |r: &String| match matcher.positive(r) {
        Some(hit) => hit != negated,
        None => false,
    };
    match op.qualifier {
        // Plain operators on a multi-valued key: positive ones need some
        // value to match; negated ones need no value to match.
        None if negated => request.iter().all(satisfies),
        None => request.iter().any(satisfies),
        Some(SetQualifier::ForAnyValue) => request.iter().any(satisfies),
        Some(SetQualifier::ForAllValues) => request.iter().all(satisfies),
    }
}

#[derive(Clone, Copy)]
enum Cmp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    fn holds<T: PartialOrd>(self, request: T, policy: T) -> bool {
        match self {
            Cmp::Eq => request == policy,
            Cmp::Lt => request < policy,
            Cmp::Le => request <= policy,
            Cmp::Gt => request > policy,
            Cmp::Ge => request >= policy,
        }
    }
}

/// The policy values of one entry, prepared for the positive form of the
/// operator (StringNotEquals is evaluated as "not StringEquals").
enum ValueMatcher {
    StringExact(Vec<String>),
    StringIgnoreCase(Vec<String>),
    StringLike(Vec<Vec<Tok>>),
    Arn(Vec<Vec<Tok>>),
    Numeric(Cmp, Vec<f64>),
    Date(Cmp, Vec<i64>),
    Bool(Vec<bool>),
    Ip(Vec<super::values::Cidr>),
}

impl ValueMatcher {
    fn new(base: BaseOperator, values: &[String], vars: Option<Resolver<'_>>) -> ValueMatcher {
        use BaseOperator::*;
        // Values whose variables cannot be resolved match nothing.
        let literal = |v: &String| -> Option<String> {
            compile(v, false, vars).map(|toks| {
                toks.iter()
                    .map(|t| match t {
                        Tok::Lit(c) => *c,
                        // Unreachable with wildcards off, but keep it total.
                        Tok::One => '?',
                        Tok::Star => '*',
                    })
                    .collect()
            })
        };
        let patterns = || {
            values
                .iter()
                .filter_map(|v| compile(v, true, vars))
                .collect()
        };
        match base {
            StringEquals | StringNotEquals => {
                ValueMatcher::StringExact(values.iter().filter_map(literal).collect())
            }
            StringEqualsIgnoreCase | StringNotEqualsIgnoreCase => ValueMatcher::StringIgnoreCase(
                values
                    .iter()
                    .filter_map(literal)
                    .map(|s| s.to_lowercase())
                    .collect(),
            ),
            StringLike | StringNotLike => ValueMatcher::StringLike(patterns()),
            ArnEquals | ArnLike | ArnNotEquals | ArnNotLike => ValueMatcher::Arn(patterns()),
            NumericEquals
            | NumericNotEquals
            | NumericLessThan
            | NumericLessThanEquals
            | NumericGreaterThan
            | NumericGreaterThanEquals => ValueMatcher::Numeric(
                match base {
                    NumericLessThan => Cmp::Lt,
                    NumericLessThanEquals => Cmp::Le,
                    NumericGreaterThan => Cmp::Gt,
                    NumericGreaterThanEquals => Cmp::Ge,
                    _ => Cmp::Eq,
                },
                values.iter().filter_map(|v| parse_number(v)).collect(),
            ),
            DateEquals
            | DateNotEquals
            | DateLessThan
            | DateLessThanEquals
            | DateGreaterThan
            | DateGreaterThanEquals => ValueMatcher::Date(
                match base {
                    DateLessThan => Cmp::Lt,
                    DateLessThanEquals => Cmp::Le,
                    DateGreaterThan => Cmp::Gt,
                    DateGreaterThanEquals => Cmp::Ge,
                    _ => Cmp::Eq,
                },
                values.iter().filter_map(|v| parse_date_millis(v)).collect(),
            ),
            Bool => ValueMatcher::Bool(values.iter().filter_map(|v| parse_bool(v)).collect()),
            IpAddress | NotIpAddress => {
                ValueMatcher::Ip(values.iter().filter_map(|v| parse_cidr(v)).collect())
            }
            // Null is handled before a matcher is built.
            Null => ValueMatcher::Bool(Vec::new()),
        }
    }

    /// Whether the request value matches any policy value; `None` when the
    /// request value is not of the operator's type.
    fn positive(&self, r: &str) -> Option<bool> {
        Some(match self {
            ValueMatcher::StringExact(vs) => vs.iter().any(|v| v == r),
            ValueMatcher::StringIgnoreCase(vs) => {
                let r = r.to_lowercase();
                vs.contains(&r)
            }
            ValueMatcher::StringLike(ps) => ps.iter().any(|p| glob_str(p, r)),
            ValueMatcher::Arn(ps) => ps.iter().any(|p| arn_match(p, r)),
            ValueMatcher::Numeric(cmp, vs) => {
                let r = parse_number(r)?;
                vs.iter().any(|v| cmp.holds(r, *v))
            }
            ValueMatcher::Date(cmp, vs) => {
                let r = parse_date_millis(r)?;
                vs.iter().any(|v| cmp.holds(r, *v))
            }
            ValueMatcher::Bool(vs) => {
                let r = parse_bool(r)?;
                vs.contains(&r)
            }
            ValueMatcher::Ip(cidrs) => {
                let ip: IpAddr = r.trim().parse().ok()?;
                cidrs.iter().any(|c| c.contains(ip))
            }
        })
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}
