//! Placeholder lists for statements built at run time (multi-row `INSERT`s, `IN (…)` lists).

use crate::Backend;

/// `n` parameters separated by commas, numbered from `first` on PostgreSQL. SQLite gets anonymous `?`
/// parameters: sqlx finds each numbered one by a linear search, quadratic in a long statement.
pub(crate) fn push_params(sql: &mut String, backend: Backend, first: usize, n: usize) {
    for i in first..first + n {
        if i > first {
            sql.push_str(", ");
        }
        match backend {
            Backend::Sqlite => sql.push('?'),
            Backend::Postgres => {
                sql.push('$');
                sql.push_str(&i.to_string());
            }
        }
    }
}

/// `(…), (…)`: `rows` tuples of `cols` parameters each, then `tail` inside each tuple.
pub(crate) fn push_rows(sql: &mut String, backend: Backend, rows: usize, cols: usize, tail: &str) {
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        push_params(sql, backend, 1 + r * cols, cols);
        sql.push_str(tail);
        sql.push(')');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_per_backend() {
        let mut pg = String::new();
        push_rows(&mut pg, Backend::Postgres, 2, 3, ", NULL");
        assert_eq!(pg, "($1, $2, $3, NULL), ($4, $5, $6, NULL)");
        let mut lite = String::new();
        push_rows(&mut lite, Backend::Sqlite, 2, 2, "");
        assert_eq!(lite, "(?, ?), (?, ?)");
        let mut list = String::new();
        push_params(&mut list, Backend::Postgres, 2, 3);
        assert_eq!(list, "$2, $3, $4");
    }
}
