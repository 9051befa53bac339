package switchboard

// Conversions between Status and the proto's enum.

import pb "switchboard.dev/client/internal/switchboardpb"

func statusToProto(s Status) pb.Status { return pb.Status(s - 1) }

func statusFromProto(s pb.Status) Status { return Status(s + 1) }
