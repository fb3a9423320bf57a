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

/// `items` cut into runs of the given `sizes` (descending, ending with 1), largest first: statements
/// built for a run then come in a few shapes, which each connection's statement cache keeps prepared
/// (a new row count is a new statement for SQLite to parse and plan).
pub(crate) fn chunks<'a, T>(items: &'a [T], sizes: &'static [usize]) -> impl Iterator<Item = &'a [T]> {
    // Without a last size of 1, a remainder smaller than every size would be left out silently.
    debug_assert_eq!(sizes.last(), Some(&1), "chunk sizes must end with 1");
    let mut rest = items;
    std::iter::from_fn(move || {
        let n = *sizes.iter().find(|&&n| n <= rest.len())?;
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_come_in_few_sizes() {
        let items: Vec<u32> = (0..45).collect();
        let sizes: Vec<usize> = chunks(&items, &[32, 16, 8, 4, 2, 1]).map(<[u32]>::len).collect();
        assert_eq!(sizes, [32, 8, 4, 1]);
        assert_eq!(
            chunks(&items, &[32, 16, 8, 4, 2, 1])
                .flatten()
                .copied()
                .collect::<Vec<_>>(),
            items
        );
        assert_eq!(chunks::<u32>(&[], &[4, 1]).count(), 0);
        let sizes: Vec<usize> = chunks(&vec![0u8; 600], &[256, 64, 16, 4, 1])
            .map(<[u8]>::len)
            .collect();
        assert_eq!(sizes, [256, 256, 64, 16, 4, 4]);
    }

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
