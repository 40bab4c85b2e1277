package registry

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// OwnerSlot is the storage slot of the contract's owner (its first state
// variable).
const OwnerSlot = "0x0000000000000000000000000000000000000000000000000000000000000000"

// allocEntry is the registry's entry in genesis.json's alloc, indented as
// the file is.
func allocEntry(code string) string {
	return fmt.Sprintf(`    %q: {
      "nonce": "0x1",
      "balance": "0x0",
      "code": %q,
      "storage": {
        %q: "0x%064x"
      }
    }`, Address.Hex(), code, OwnerSlot, Owner.Big())
}

// WithAlloc returns genesis.json with the registry's alloc entry set to code
// (and the owner in its storage): replaced where the file has one, else
// added as alloc's last entry. The rest of the file is left byte for byte,
// so that the diff shows only the registry.
func WithAlloc(genesis []byte, code string) ([]byte, error) {
	entry := allocEntry(code)
	key := fmt.Sprintf("%q", Address.Hex())
	if i := bytes.Index(bytes.ToLower(genesis), bytes.ToLower([]byte(key))); i >= 0 {
		start := bytes.LastIndexByte(genesis[:i], '\n') + 1
		open := bytes.IndexByte(genesis[i:], '{')
		if open < 0 {
			return nil, errors.New("the registry's alloc entry has no object")
		}
		end, err := closing(genesis, i+open)
		if err != nil {
			return nil, err
		}
		return concat(genesis[:start], []byte(entry), genesis[end+1:]), nil
	}
	// alloc is the last member of the file: its object closes just before
	// the file's.
	s := strings.TrimRight(string(genesis), " \n")
	if !strings.HasSuffix(s, "}\n}") && !strings.HasSuffix(s, "}\n  }\n}") {
		return nil, errors.New(`expected "alloc" as the last member of the file, as in the repository's genesis.json`)
	}
	last := strings.LastIndex(s, "\n  }\n}")
	if last < 0 {
		return nil, errors.New(`expected "alloc" as the last member of the file, indented by two spaces`)
	}
	return []byte(s[:last] + ",\n" + entry + s[last:] + "\n"), nil
}

// closing returns the index of the brace that closes the one at open.
// genesis.json's alloc entries hold no strings with braces.
func closing(b []byte, open int) (int, error) {
	depth := 0
	for i := open; i < len(b); i++ {
		switch b[i] {
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				return i, nil
			}
		}
	}
	return 0, errors.New("the registry's alloc entry is not closed")
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
