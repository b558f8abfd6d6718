//go:build !linux

package main

import (
	"errors"
	"io"
	"os"
)

// isTerminal reports false: kvd passwd reads the password from stdin's
// first line on systems where it cannot turn a terminal's echo off.
func isTerminal(*os.File) bool { return false }

func readPassword(*os.File, io.Writer, string) (string, error) {
	return "", errors.New("reading a password from a terminal is not supported here: pipe it on stdin")
}
