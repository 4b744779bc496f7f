package component

import "io"

func benchStream(r io.Reader, max int) *stream { return newStream(nil, r, max, 64) }
