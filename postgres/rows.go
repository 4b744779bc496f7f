package postgres

import (
	"context"
	"database/sql"
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
