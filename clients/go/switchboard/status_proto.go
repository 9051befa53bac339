package switchboard

// Conversions between Status and the proto's enum (the same values, STATUS_OK = 1, ...).

import pb "switchboard.dev/client/internal/switchboardpb"

func statusToProto(s Status) pb.Status { return pb.Status(s) }

func statusFromProto(s pb.Status) Status { return Status(s) }
