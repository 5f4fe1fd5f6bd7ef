//! The group commit: statements, their parameters, and the folding of a
//! batch's inserts into multi-row statements. The SQL itself is written by
//! the aggregates' modules (`store::jobs`, `store::tenancy`, ...): what
//! the controller hands over are typed writes.

/// A value bound to an SQL parameter.
#[derive(Debug, Clone)]
pub enum Arg {
    I(i64),
    F(f64),
    S(String),
    OI(Option<i64>),
    OF(Option<f64>),
    OS(Option<String>),
}

/// One statement of a transaction.
#[derive(Debug, Clone)]
pub struct Op {
    pub sql: std::borrow::Cow<'static, str>,
    pub args: Vec<Arg>,
    /// A single-row insert that a commit may fold with its like into one
    /// multi-row statement (one round trip for a whole batch of
    /// submissions): set by the aggregate that writes it ([`foldable`]).
    pub fold: bool,
}

pub(crate) fn op(sql: &'static str, args: Vec<Arg>) -> Op {
    Op {
        sql: sql.into(),
        args,
        fold: false,
    }
}

/// A single-row `INSERT ... VALUES ($1, ..)` that [`fold_ops`] may fold.
pub(crate) fn foldable(sql: &'static str, args: Vec<Arg>) -> Op {
    Op {
        fold: true,
        ..op(sql, args)
    }
}

/// Most parameters in one statement (SQLite allows 32766, PostgreSQL 65535).
const MAX_PARAMS: usize = 30_000;

/// `INSERT INTO t (cols) VALUES ($1, ..), ($k, ..), ..` for `rows` rows of
/// `width` values, from the single-row form.
fn multi_row_sql(single: &str, width: usize, rows: usize) -> String {
    let head = single.split(" VALUES ").next().unwrap_or(single);
    let mut s = String::with_capacity(head.len() + rows * width * 6);
    s.push_str(head);
    s.push_str(" VALUES ");
    let mut n = 0;
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..width {
            if c > 0 {
                s.push_str(", ");
            }
            n += 1;
            s.push('$');
            s.push_str(&n.to_string());
        }
        s.push(')');
    }
    s
}

/// Folds the foldable inserts of `ops` into multi-row statements. Each
/// run of foldable inserts between two other statements is folded on its
/// own, so every statement still follows the ones it depends on.
pub fn fold_ops(ops: Vec<Op>) -> Vec<Op> {
    let mut out: Vec<Op> = Vec::new();
    let mut groups: Vec<(&'static str, Vec<Vec<Arg>>)> = Vec::new();
    fn flush(groups: &mut Vec<(&'static str, Vec<Vec<Arg>>)>, out: &mut Vec<Op>) {
        for (sql, rows) in groups.drain(..) {
            let width = rows[0].len().max(1);
            let per = (MAX_PARAMS / width).max(1);
            let mut rows = rows.into_iter().peekable();
            while rows.peek().is_some() {
                let chunk: Vec<Vec<Arg>> = rows.by_ref().take(per).collect();
                if chunk.len() == 1 {
                    let args = chunk.into_iter().next().unwrap_or_default();
                    out.push(op(sql, args));
                } else {
                    out.push(Op {
                        sql: multi_row_sql(sql, width, chunk.len()).into(),
                        args: chunk.into_iter().flatten().collect(),
                        fold: false,
                    });
                }
            }
        }
    }
    for o in ops {
        match o.sql {
            std::borrow::Cow::Borrowed(sql) if o.fold => {
                match groups.iter_mut().find(|g| g.0 == sql) {
                    Some(g) => g.1.push(o.args),
                    None => groups.push((sql, vec![o.args])),
                }
            }
            _ => {
                flush(&mut groups, &mut out);
                out.push(o);
            }
        }
    }
    flush(&mut groups, &mut out);
    out
}

/// Writes `ops` in one transaction on `conn`.
pub async fn write_ops(conn: &mut sqlx::AnyConnection, ops: Vec<Op>) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut tx = conn.begin().await?;
    for o in ops {
        let mut q = sqlx::query(&o.sql);
        for a in o.args {
            q = match a {
                Arg::I(v) => q.bind(v),
                Arg::F(v) => q.bind(v),
                Arg::S(v) => q.bind(v),
                Arg::OI(v) => q.bind(v),
                Arg::OF(v) => q.bind(v),
                Arg::OS(v) => q.bind(v),
            };
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await
}
