//go:build !linux

package cgroups

import (
	"errors"
	"log/slog"

	"vzd/spec"
)

// New, NewV1 and NewV2 need Linux.
func New(log *slog.Logger) (Manager, error) { return nil, errors.ErrUnsupported }

func NewV1(root, parent string, log *slog.Logger) (Manager, error) { return nil, errors.ErrUnsupported }

func NewV2(root, parent string, log *slog.Logger) (Manager, error) { return nil, errors.ErrUnsupported }

// DeviceRuleFor needs Linux.
func DeviceRuleFor(d spec.Device) (DeviceRule, error) { return DeviceRule{}, errors.ErrUnsupported }
