package state

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/common"
)

func TestSaveLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "app-state.json")
	s, err := Load(path)
	if err != nil || !reflect.DeepEqual(s, State{}) {
		t.Fatalf("no file: %+v %v, want the zero state", s, err)
	}
	want := State{Height: 7, Head: Head{Number: 7, Hash: common.Hash{7}, Timestamp: 1_700_000_007}, LastBlockHash: []byte{1, 2, 3}}
	for _, st := range []State{{Height: 6}, want} { // the second replaces the first
		if err := Save(path, st); err != nil {
			t.Fatal(err)
		}
	}
	if s, err = Load(path); err != nil || !reflect.DeepEqual(s, want) {
		t.Fatalf("loaded %+v %v, want %+v", s, err, want)
	}
	if string(s.AppHash()) != string(want.Head.Hash.Bytes()) {
		t.Fatal("app hash is not the execution block hash")
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil || len(entries) != 1 {
		t.Fatalf("left behind: %v %v", entries, err)
	}
	if err := os.WriteFile(path, []byte("{half"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("corrupt file: %v", err)
	}
}
