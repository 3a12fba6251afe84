package templates

import (
	"testing"

	"vzd/actuators/image"
	"vzd/templates"
)

// The template cache makes each image's presized copy where, and at the
// size, the images actuator looks for it.
func TestPresizedMatchesImages(t *testing.T) {
	if templates.PresizedSize != image.DefaultSize {
		t.Errorf("templates.PresizedSize = %d, image.DefaultSize = %d", templates.PresizedSize, image.DefaultSize)
	}
	for _, img := range []string{"/c/debian-12-x86_64-0123456789ab.img", "/c/busybox-0123456789ab.img"} {
		if a, b := templates.PresizedPath(img, templates.PresizedSize), image.PresizedPath(img, image.DefaultSize); a != b {
			t.Errorf("presized copy of %s: templates makes %s, image looks for %s", img, a, b)
		}
	}
}
