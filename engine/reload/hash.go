package reload

import (
	"crypto/sha256"
	"encoding/binary"
	"os"
	"slices"
)

// fileSum is the state of one file: its content hash, or missing.
type fileSum struct {
	ok  bool // the file could be read
	sum [sha256.Size]byte
}

// sumFile hashes a file's content, following symlinks.
func sumFile(path string) fileSum {
	data, err := os.ReadFile(path)
	if err != nil {
		return fileSum{}
	}
	return fileSum{ok: true, sum: sha256.Sum256(data)}
}

// fileSums is the state of a set of files.
type fileSums map[string]fileSum

// sumFiles hashes every path, taking the sum from known when it has one.
func sumFiles(paths []string, known fileSums) fileSums {
	out := make(fileSums, len(paths))
	for _, p := range paths {
		if s, ok := known[p]; ok {
			out[p] = s
			continue
		}
		out[p] = sumFile(p)
	}
	return out
}

// digest folds the set into one hash; equal digests mean nothing changed.
func (s fileSums) digest() [sha256.Size]byte {
	paths := make([]string, 0, len(s))
	for p := range s {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	h := sha256.New()
	var n [8]byte
	for _, p := range paths {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write([]byte(p))
		if fs := s[p]; fs.ok {
			h.Write([]byte{1})
			h.Write(fs.sum[:])
		} else {
			h.Write([]byte{0})
		}
	}
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}
