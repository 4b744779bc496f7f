package xsd

import (
	"fmt"
	"strings"
	"time"
)

// libxml2 2.9 matches xs:pattern facets with a backtracking automaton. Its
// push budget cuts some exponential cases off after ~0.3 s per value, but
// not polynomial ones: a*a*a*b takes 75 s on a 4 KiB value, hours on
// 64 KiB; .*@.* takes ~16 s on 64 KiB. A schema is the user's, a value is a
// device's: together they could pin a core for as long as they like. So
// Compile probes every pattern on long runs of the characters it mentions
// (and of some usual ones), the inputs on which backtracking explodes, and
// refuses a pattern that is slow on them: linear patterns take a few
// microseconds on 512 characters, quadratic ones a millisecond. It is a
// heuristic that catches the usual shapes (nested or adjacent repetitions
// that can match the same text), not a proof.
const (
	probeLen = 512
	// probeLimit is the CPU time one probe match may take.
	probeLimit = 250 * time.Microsecond
	// probeBudget bounds the probing of one compile.
	probeBudget = 2 * time.Second
	// maxProbeRunes bounds the pattern characters probed, and the first
	// maxPairRunes of them are also probed in pairs ("abab...").
	maxProbeRunes = 32
	maxPairRunes  = 8
)

// probeRunes are probed for every pattern: they stand for the usual
// character classes (\w, \d, \s, ., [a-z], \p{L}, \p{Nd}...).
var probeRunes = []rune("a0 .-A_@/:,=é\u03b1\u4e2d\u0663")

// probeInputs builds the inputs a pattern is probed with. Each ends with a
// character unlikely to match, so that matching fails at the very end,
// after trying every way to match the run before it.
func probeInputs(pattern string) []string {
	seen := map[rune]bool{}
	var own []rune
	for _, r := range pattern {
		if !seen[r] && r >= ' ' && len(own) < maxProbeRunes {
			seen[r] = true
			own = append(own, r)
		}
	}
	var runes []rune
	runes = append(runes, own...)
	for _, r := range probeRunes {
		if !seen[r] {
			runes = append(runes, r)
		}
	}
	// A fixed start (ID-\w*\w*;) makes every run fail at once: probe
	// with it too, so that what follows it is tried.
	prefixes := []string{""}
	if p := samplePrefix(pattern); p != "" {
		prefixes = append(prefixes, p)
	}
	var out []string
	for _, pre := range prefixes {
		for _, r := range runes {
			run := pre + strings.Repeat(string(r), probeLen)
			out = append(out, run+"!", run+"\n")
		}
	}
	// A repeated group ((abc)*, (abc|abcabc)+) backtracks on runs of
	// its own text, which runs of one character or of pairs miss.
	for _, g := range repeatedGroups(pattern) {
		for _, pre := range prefixes {
			out = append(out, pre+strings.Repeat(g, max(probeLen/len(g), 2))+"!")
		}
	}
	pairs := own
	if len(pairs) > maxPairRunes {
		pairs = pairs[:maxPairRunes]
	}
	for _, a := range pairs {
		for _, b := range pairs {
			if a != b {
				out = append(out, strings.Repeat(string(a)+string(b), probeLen/2)+"!")
			}
		}
	}
	return out
}

// samplePrefix returns a string that the mandatory start of pattern
// matches: a sample character for each leading atom (a literal, an
// escape, ., or a character class) or group (its first branch) that must
// occur, as many times as a {n} asks, stopping at the first optional or
// repeated one (of a + or {n,m}, the minimum is sampled). Probing with it
// in front of the runs gets past the start (ID-, [A-Z]{2}\d-, (ID|SN)-),
// so that the repetitions after it are tried.
func samplePrefix(pattern string) string {
	s, _ := sampleSeq([]rune(pattern))
	if len(s) > maxSamplePrefix {
		s = s[:maxSamplePrefix]
	}
	return string(s)
}

// maxSamplePrefix bounds samplePrefix, in characters.
const maxSamplePrefix = 64

// sampleSeq samples the mandatory start of the first branch of rs;
// complete reports whether the whole branch was sampled.
func sampleSeq(rs []rune) (sample []rune, complete bool) {
	for i := 0; i < len(rs); {
		if rs[i] == '|' {
			return sample, true
		}
		if len(sample) > maxSamplePrefix {
			return sample, false
		}
		var atom []rune
		full, next := true, 0
		if rs[i] == '(' {
			end := groupEnd(rs, i)
			if end < 0 {
				return sample, false
			}
			atom, full = sampleSeq(rs[i+1 : end])
			next = end + 1
		} else {
			c, n, ok := sampleAtom(rs, i)
			if !ok {
				return sample, false
			}
			atom, next = []rune{c}, n
		}
		count, stop := 1, false
		if next < len(rs) {
			switch rs[next] {
			case '?', '*':
				count, stop = 0, true
			case '+':
				stop = true
			case '{':
				// {n} is fixed: go on after it; {n,} and {n,m}: stop.
				k := next + 1
				count = 0
				for k < len(rs) && rs[k] >= '0' && rs[k] <= '9' {
					count = min(count*10+int(rs[k]-'0'), maxSamplePrefix)
					k++
				}
				if k < len(rs) && rs[k] == '}' {
					next = k + 1
				} else {
					stop = true
				}
			}
		}
		for range count {
			sample = append(sample, atom...)
		}
		if stop || !full {
			return sample, false
		}
		i = next
	}
	return sample, true
}

// maxProbeGroups bounds the repeated groups probed per pattern.
const maxProbeGroups = 16

// repeatedGroups returns a sample of the text of each group of pattern
// that is repeated (followed by *, + or {), of two characters or more.
func repeatedGroups(pattern string) []string {
	rs := []rune(pattern)
	var out []string
	for i := 0; i < len(rs) && len(out) < maxProbeGroups; i++ {
		switch rs[i] {
		case '\\':
			i++
			continue
		case '[':
			if e := classEnd(rs, i); e > 0 {
				i = e - 1
			}
			continue
		case '(':
		default:
			continue
		}
		end := groupEnd(rs, i)
		if end < 0 || end+1 >= len(rs) || !strings.ContainsRune("*+{", rs[end+1]) {
			continue
		}
		if s, _ := sampleSeq(rs[i+1 : end]); len(s) >= 2 {
			out = append(out, string(s))
		}
	}
	return out
}

// groupEnd returns the index of the ) closing the group opened at rs[i],
// or -1.
func groupEnd(rs []rune, i int) int {
	depth := 0
	for k := i; k < len(rs); k++ {
		switch rs[k] {
		case '\\':
			k++
		case '[':
			if k = classEnd(rs, k); k < 0 {
				return -1
			}
			k-- // classEnd is past the ]
		case '(':
			depth++
		case ')':
			if depth--; depth == 0 {
				return k
			}
		}
	}
	return -1
}

// classEnd returns the index after the ] closing the class opened at
// rs[i] (a subtraction -[...] nests), or -1.
func classEnd(rs []rune, i int) int {
	depth := 0
	for k := i + 1; k < len(rs); k++ {
		switch rs[k] {
		case '\\':
			k++
		case '[':
			depth++
		case ']':
			if depth == 0 {
				return k + 1
			}
			depth--
		}
	}
	return -1
}

// sampleAtom returns a character the atom at rs[i] matches and the index
// after the atom; ok is false for a group, a branch, a negated class or
// an escape it has no sample for.
func sampleAtom(rs []rune, i int) (c rune, next int, ok bool) {
	switch r := rs[i]; r {
	case '(', ')', '|', '?', '*', '+', '{', '}', ']':
		return 0, 0, false
	case '.':
		return 'a', i + 1, true
	case '\\':
		if i+1 >= len(rs) {
			return 0, 0, false
		}
		if rs[i+1] == 'p' {
			return propertySample(rs, i+2)
		}
		c, ok := escapeSample(rs[i+1])
		return c, i + 2, ok
	case '[':
		// The class's first member.
		if i+1 >= len(rs) || rs[i+1] == '^' {
			return 0, 0, false
		}
		c, ok := rs[i+1], true
		if c == '\\' && i+2 < len(rs) {
			c, ok = escapeSample(rs[i+2])
		}
		end := classEnd(rs, i)
		return c, end, ok && end > 0
	default:
		return r, i + 1, true
	}
}

// propertySample returns a character of the category \p{...} whose
// opening brace is at rs[i], for the usual categories, and the index after
// the closing one.
func propertySample(rs []rune, i int) (rune, int, bool) {
	if i >= len(rs) || rs[i] != '{' {
		return 0, 0, false
	}
	end := i + 1
	for end < len(rs) && rs[end] != '}' {
		end++
	}
	if end >= len(rs) {
		return 0, 0, false
	}
	name := string(rs[i+1 : end])
	switch {
	case name == "Lu":
		return 'A', end + 1, true
	case name == "L" || name == "Ll" || name == "IsBasicLatin":
		return 'a', end + 1, true
	case name == "N" || name == "Nd":
		return '0', end + 1, true
	case name == "P" || name == "Pd":
		return '-', end + 1, true
	}
	return 0, 0, false
}

// escapeSample returns a character the escape \e matches.
func escapeSample(e rune) (rune, bool) {
	switch e {
	case 'd':
		return '0', true
	case 'w', 'i', 'c', 'D', 'S', 'I', 'C':
		return 'a', true
	case 's':
		return ' ', true
	case 'W':
		return '!', true
	case 'n':
		return '\n', true
	case 'r':
		return '\r', true
	case 't':
		return '\t', true
	case 'p', 'P':
		return 0, false
	}
	return e, true // \. \- \\ and the other single-character escapes
}

// checkPatterns probes the patterns of a schema (see above) and returns an
// issue for each that is too slow.
func checkPatterns(pats []patternRef) []CompileIssue {
	var issues []CompileIssue
	var spent time.Duration
	done := map[string]bool{}
	for _, p := range pats {
		if done[p.value] {
			continue
		}
		done[p.value] = true
		if spent > probeBudget {
			issues = append(issues, CompileIssue{Message: "the schema's patterns take too long to check; use fewer or simpler xs:pattern facets"})
			break
		}
		worst, total, ok := probePattern(p.value, probeInputs(p.value), probeLimit)
		spent += total
		if !ok || worst <= probeLimit {
			continue // a pattern that does not compile was reported by libxml2
		}
		msg := fmt.Sprintf("xs:pattern %q can take more than linear time to match (%v on %d characters, "+
			"so minutes on a large value): libxml2 matches patterns by backtracking; rewrite it so that no two "+
			"repetitions can match the same text (for example [^@]*@.* instead of .*@.*)", p.value, worst.Round(time.Microsecond), probeLen)
		line := p.line
		if !p.main {
			msg = fmt.Sprintf("in imported schema %q, line %d: %s", p.ns, p.line, msg)
			line = 0
		}
		issues = append(issues, CompileIssue{Line: line, Message: msg})
		break // one is enough, and each slow probe costs
	}
	return issues
}
