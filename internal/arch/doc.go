// Package arch holds no code, only a test that keeps the house's shape: the
// import rule between iotgate's packages (see rules in arch_test.go). It
// runs in `make test` with every other test; a broken rule fails it with
// the offending import and the chain that leads to it.
package arch
