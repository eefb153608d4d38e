package store

import (
	"os"

	"golang.org/x/sys/unix"
)

// lastData returns the offset after the last region of f that holds data,
// skipping the holes that badger's preallocation leaves in sparse files.
func lastData(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	end, pos := int64(0), int64(0)
	for pos < fi.Size() {
		d, err := f.Seek(pos, unix.SEEK_DATA)
		if err != nil {
			break // ENXIO: no data after pos; or no hole support
		}
		h, err := f.Seek(d, unix.SEEK_HOLE)
		if err != nil {
			return fi.Size(), nil
		}
		end, pos = h, h
	}
	if pos == 0 && end == 0 {
		// No data found, or seeking by holes is not supported: the caller
		// scans the whole file.
		return fi.Size(), nil
	}
	return end, nil
}
