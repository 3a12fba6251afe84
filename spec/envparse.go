package spec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// The legacy ve.conf/vz.conf syntax is a subset of shell assignments, as
// vzctl reads it (libvzctl conf.c): one KEY=value per line, the value bare,
// "double" or 'single' quoted, # starting a comment at the start of a line
// or after whitespace following a value. There is no variable expansion
// here; $VEID is expanded later, and only in VE_ROOT and VE_PRIVATE.

// ParseError is a syntax error in a legacy file.
type ParseError struct {
	File   string
	Line   int
	Column int
	Err    error
}

func (e *ParseError) Error() string {
	return Pos{File: e.File, Line: e.Line, Column: e.Column}.String() + ": " + e.Err.Error()
}

func (e *ParseError) Unwrap() error { return e.Err }

// Sentinel errors of the legacy parser.
var (
	ErrMissingSeparator = errors.New("expected KEY=value")
	ErrBadKey           = errors.New("invalid key (letters, digits and _ only)")
	ErrUnterminated     = errors.New("unterminated quoted value")
	ErrTrailing         = errors.New("unexpected text after value (quote values that contain spaces)")
	ErrNUL              = errors.New("NUL byte in file")
)

// legacyKV is one assignment with where it was written.
type legacyKV struct {
	Key, Value string
	Pos        Pos // of the key
}

// legacyParser reads assignments one at a time; Next returns io.EOF at the
// end. After a *ParseError the parser has skipped the bad line, so a caller
// may keep going to report every bad line.
type legacyParser struct {
	file string
	data []byte
	line int
}

func newLegacyParser(file string, data []byte) *legacyParser {
	return &legacyParser{file: file, data: data}
}

func (p *legacyParser) Next() (legacyKV, error) {
	for len(p.data) > 0 {
		var raw []byte
		if i := bytes.IndexByte(p.data, '\n'); i >= 0 {
			raw, p.data = p.data[:i], p.data[i+1:]
		} else {
			raw, p.data = p.data, nil
		}
		p.line++
		raw = bytes.TrimSuffix(raw, []byte("\r"))
		kv, ok, err := p.parseLine(raw)
		if err != nil || ok {
			return kv, err
		}
	}
	return legacyKV{}, io.EOF
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

func (p *legacyParser) errAt(col int, err error) *ParseError {
	return &ParseError{File: p.file, Line: p.line, Column: col, Err: err}
}

func (p *legacyParser) parseLine(raw []byte) (legacyKV, bool, error) {
	if bytes.IndexByte(raw, 0) >= 0 {
		return legacyKV{}, false, p.errAt(0, ErrNUL)
	}
	i := 0
	for i < len(raw) && isSpace(raw[i]) {
		i++
	}
	if i == len(raw) || raw[i] == '#' {
		return legacyKV{}, false, nil
	}
	if bytes.HasPrefix(raw[i:], []byte("export")) && i+6 < len(raw) && isSpace(raw[i+6]) {
		i += 6
		for i < len(raw) && isSpace(raw[i]) {
			i++
		}
	}
	keyCol := i + 1
	start := i
	for i < len(raw) && raw[i] != '=' {
		c := raw[i]
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || (c >= '0' && c <= '9' && i > start)) {
			if isSpace(c) || c == '=' {
				break
			}
			return legacyKV{}, false, p.errAt(i+1, ErrBadKey)
		}
		i++
	}
	if i == start {
		return legacyKV{}, false, p.errAt(keyCol, ErrBadKey)
	}
	if i == len(raw) || raw[i] != '=' {
		return legacyKV{}, false, p.errAt(keyCol, ErrMissingSeparator)
	}
	key := string(raw[start:i])
	i++ // '='
	var val []byte
	switch {
	case i < len(raw) && raw[i] == '"':
		j := i + 1
		for ; j < len(raw) && raw[j] != '"'; j++ {
			if raw[j] == '\\' && j+1 < len(raw) && bytes.IndexByte([]byte("\"\\$`"), raw[j+1]) >= 0 {
				j++
			}
			val = append(val, raw[j])
		}
		if j >= len(raw) {
			return legacyKV{}, false, p.errAt(i+1, ErrUnterminated)
		}
		i = j + 1
	case i < len(raw) && raw[i] == '\'':
		j := bytes.IndexByte(raw[i+1:], '\'')
		if j < 0 {
			return legacyKV{}, false, p.errAt(i+1, ErrUnterminated)
		}
		val = raw[i+1 : i+1+j]
		i = i + 2 + j
	default:
		j := i
		for j < len(raw) && !isSpace(raw[j]) {
			if raw[j] == '"' || raw[j] == '\'' {
				return legacyKV{}, false, p.errAt(j+1, fmt.Errorf("quote inside an unquoted value"))
			}
			j++
		}
		val = raw[i:j]
		i = j
	}
	// Only blanks or a comment may follow the value.
	for i < len(raw) && isSpace(raw[i]) {
		i++
	}
	if i < len(raw) && (raw[i] != '#' || (i > 0 && !isSpace(raw[i-1]) && raw[i-1] != '"' && raw[i-1] != '\'')) {
		return legacyKV{}, false, p.errAt(i+1, ErrTrailing)
	}
	return legacyKV{Key: key, Value: string(val), Pos: Pos{File: p.file, Line: p.line, Column: keyCol}}, true, nil
}

// legacyKeys parses a whole file into its assignments (the last of
// duplicate keys wins) and its syntax errors.
func parseLegacyKeys(file string, data []byte) (map[string]legacyKV, Diagnostics) {
	var diags Diagnostics
	kvs := map[string]legacyKV{}
	p := newLegacyParser(file, data)
	for {
		kv, err := p.Next()
		if err == io.EOF {
			break
		}
		var pe *ParseError
		if errors.As(err, &pe) {
			diags.Errorf(Pos{File: pe.File, Line: pe.Line, Column: pe.Column}, "%v", pe.Err)
			continue
		}
		if !utf8.ValidString(kv.Value) {
			// HCL, JSON and most tools need UTF-8; old files may hold
			// Latin-1 descriptions.
			diags.Warnf(kv.Pos, "%s: value is not valid UTF-8; invalid bytes replaced with U+FFFD", kv.Key)
			kv.Value = strings.ToValidUTF8(kv.Value, "\uFFFD")
		}
		kvs[kv.Key] = kv
	}
	return kvs, diags
}
