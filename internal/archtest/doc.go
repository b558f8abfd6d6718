// Package archtest holds the tests that keep kvd's imports flowing one way,
// as DESIGN.md §2 lays them out: cmd → server/client → engine → wal. It has
// no code of its own.
//
// The rule is an allow-list (allowed, in imports_test.go): every package of
// the module is listed with the packages of the module it may import, and
// separately what its tests may import besides. Imports are read from the
// import declarations of every Go file, whatever its build constraints, so
// a file built only on another platform is held to the rule too. A package
// missing from the list fails the test, as does an entry that matches no
// package: a new package is given its rules when it is added.
//
// TestAllowListStatesTheLayering holds the list itself to the rules the
// design names: wal imports nothing of kvd's, server does not import wal
// (it reaches the log only through engine), client imports nothing of
// engine, wal or server, and nothing imports cmd. TestImportsFlowOneWay
// also checks, through go list, that engine and wal depend on no
// networking (net, net/http), directly or transitively.
package archtest
