package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// rowScanner is what *sql.Row and *sql.Rows share.
type rowScanner interface{ Scan(...any) error }

// queryRows runs q and scans every row with scan, so that each store method
// states its query and its row shape, not the loop. op names the query in
// errors.
func queryRows[T any](ctx context.Context, db *sql.DB, op string, scan func(rowScanner) (T, error), q string, args ...any) ([]T, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	return collectRows(rows, err, op, scan)
}

// stmtRows is queryRows for a prepared statement.
func stmtRows[T any](ctx context.Context, st *sql.Stmt, op string, scan func(rowScanner) (T, error), args ...any) ([]T, error) {
	rows, err := st.QueryContext(ctx, args...)
	return collectRows(rows, err, op, scan)
}

// collectRows scans every row of a query's result.
func collectRows[T any](rows *sql.Rows, err error, op string, scan func(rowScanner) (T, error)) ([]T, error) {
	if err != nil {
		return nil, translate(err, op)
	}
	out, err := scanAll(rows, scan)
	if err != nil {
		return nil, translate(err, op)
	}
	return out, nil
}

// queryTx is queryRows in a transaction; its errors are untranslated, for
// writeTx's caller to translate.
func queryTx[T any](ctx context.Context, tx *sql.Tx, scan func(rowScanner) (T, error), q string, args ...any) ([]T, error) {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return scanAll(rows, scan)
}

// scanAll scans every row of rows and closes them.
func scanAll[T any](rows *sql.Rows, scan func(rowScanner) (T, error)) ([]T, error) {
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// scanInt64 scans a one-column bigint row.
func scanInt64(r rowScanner) (int64, error) {
	var n int64
	err := r.Scan(&n)
	return n, err
}

// scanString scans a one-column text row.
func scanString(r rowScanner) (string, error) {
	var s string
	err := r.Scan(&s)
	return s, err
}

// pageOf cuts items, queried with LIMIT limit+1, to one page and returns
// the cursor of the next page: "" when items was the last one.
func pageOf[T any](items []T, limit int, cursorOf func(T) string) ([]T, string) {
	if len(items) <= limit {
		return items, ""
	}
	items = items[:limit]
	return items, cursorOf(items[limit-1])
}

// budgetQuery is the keyset page query of a list that is bounded in rows
// and in bytes: columns from "from" (aliased alias) where "where", ordered
// by keys (columns of alias) in dir, at most limit rows (a bucket, see
// limitBucket) and, in bytes, rows until the running sum of size (each
// row's stored size) reaches the budget parameter: the row that reaches it
// is the last, so a page passes the budget by at most one row and always
// holds one. The sum runs in SQL, so the rows past the budget are never
// sent (their payloads stay TOASTed: only their sizes are read).
//
// Each row ends with two columns for scanBudgeted: the bytes before it and
// whether any row follows it (the next page is then not empty).
func budgetQuery(columns, size, from, alias, where string, keys []string, dir string, limit int, budget string) string {
	order := func(a string) string {
		o := make([]string, len(keys))
		for i, k := range keys {
			o[i] = a + "." + k + " " + dir
		}
		return strings.Join(o, ", ")
	}
	// The outer SELECT * returns the inner query's explicit columns.
	return fmt.Sprintf(`SELECT * FROM (
		SELECT %s, coalesce(sum(%s) OVER w, 0) AS page_before, lead(true) OVER w IS NOT NULL AS page_more
		FROM %s WHERE %s
		WINDOW w AS (ORDER BY %s ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
		ORDER BY %s LIMIT %d) page
	WHERE page.page_before < %s ORDER BY %s`,
		columns, size, from, where, order(alias), order(alias), limit, budget, order("page"))
}

// budgeted is a row of a budgetQuery: the item and whether a row follows.
type budgeted[T any] struct {
	item T
	more bool
}

// scanBudgeted scans a budgetQuery row with scan, which reads the list's
// columns.
func scanBudgeted[T any](scan func(rowScanner) (T, error)) func(rowScanner) (budgeted[T], error) {
	return func(row rowScanner) (budgeted[T], error) {
		var b budgeted[T]
		var before int64
		v, err := scan(trailing{row, []any{&before, &b.more}})
		b.item = v
		return b, err
	}
}

// trailing scans extra columns after those its caller asks for.
type trailing struct {
	row   rowScanner
	extra []any
}

func (t trailing) Scan(dest ...any) error { return t.row.Scan(append(dest, t.extra...)...) }

// budgetPage cuts the rows of a budgetQuery to one page of at most limit
// items and returns the cursor of the next page: "" when nothing follows.
func budgetPage[T any](rows []budgeted[T], limit int, cursorOf func(T) string) ([]T, string) {
	limit = max(limit, 1) // as budgetQuery: a page holds a row
	items := make([]T, 0, min(len(rows), limit))
	for _, r := range rows[:min(len(rows), limit)] {
		items = append(items, r.item)
	}
	if len(rows) == 0 || len(rows) <= limit && !rows[len(rows)-1].more {
		return items, ""
	}
	return items, cursorOf(items[len(items)-1])
}
