"""Generated from protos/concord/v1 by tools/gen_protos.py; do not edit."""
