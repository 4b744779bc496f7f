package xsd

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
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
	// A literal prefix (ID-\w*\w*;) makes every run fail at once: probe
	// with it too, so that what follows it is tried.
	prefixes := []string{""}
	if p := literalPrefix(pattern); p != "" {
		prefixes = append(prefixes, p)
	}
	var out []string
	for _, pre := range prefixes {
		for _, r := range runes {
			run := pre + strings.Repeat(string(r), probeLen)
			out = append(out, run+"!", run+"\n")
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

// literalPrefix returns the characters a pattern starts with that match
// only themselves, leaving out one that a quantifier follows.
func literalPrefix(pattern string) string {
	const meta = `\.?*+{}()[]|`
	i := 0
	for i < len(pattern) && !strings.ContainsRune(meta, rune(pattern[i])) && pattern[i] < utf8.RuneSelf {
		i++
	}
	if i < len(pattern) && strings.ContainsRune("?*+{", rune(pattern[i])) && i > 0 {
		i--
	}
	return pattern[:i]
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
