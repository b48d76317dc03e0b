#!/usr/bin/env bash
# LocalStack runs the executable scripts in /etc/localstack/init/ready.d once it serves requests.
# This one only calls setup_resources.py, so LocalStack, moto and MinIO share one implementation.
# In a container, mount ../localstack somewhere and point IMGSEARCH_SETUP_SCRIPT at the script
# (infra/docker-compose.yml does); from a checkout the default relative path works.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
script="${IMGSEARCH_SETUP_SCRIPT:-$here/../../setup_resources.py}"

export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://localhost:4566}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"

# The script needs boto3: LocalStack's image has it in its own virtualenv, not always in `python3`.
python="${IMGSEARCH_PYTHON:-python3}"
if ! "$python" -c 'import boto3' 2>/dev/null && [ -x /opt/code/localstack/.venv/bin/python ]; then
  python=/opt/code/localstack/.venv/bin/python
fi
exec "$python" "$script"
