"""Stand-ins for what cannot run here: only the Azure ML control plane (RecordingMLClient)."""
