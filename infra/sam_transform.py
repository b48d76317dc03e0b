"""Print template.yaml after the SAM transform, as CloudFormation JSON, offline.

cfn-lint checks a SAM template against SAM's schemas only; linting the transformed output also catches
what only the generated resources show (a Lambda timeout over 900 s, a queue visibility timeout shorter
than the function's, an unknown event property). Needs aws-sam-translator, which comes with the SAM CLI:
    <samcli-venv>/bin/python infra/sam_transform.py template.yaml > /tmp/out.json && cfn-lint /tmp/out.json
"""

import json
import logging
import os
import sys

from cfnlint.decode import decode_str
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.translator.transform import transform

# `sam build` fills ImageUri from each function's Metadata; a placeholder stands in for it here.
PLACEHOLDER_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/imgsearch:latest"


class NoManagedPolicies:
    """The translator asks IAM for managed policy ARNs only for names it must look up; we use none."""

    def load(self):
        return {}


def main(path: str) -> int:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    # Quiet the translator's harmless "Feature ... not available in Feature Toggle Config" warning.
    logging.getLogger("samtranslator.feature_toggle").setLevel(logging.ERROR)
    with open(path, encoding="utf-8") as f:
        template, problems = decode_str(f.read())
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1
    template = json.loads(json.dumps(template, default=str))  # plain dicts and strings for the translator
    for resource in template.get("Resources", {}).values():
        props = resource.get("Properties", {})
        if resource.get("Type") == "AWS::Serverless::Function" and props.get("PackageType") == "Image":
            props.setdefault("ImageUri", PLACEHOLDER_IMAGE)
    try:
        output = transform(template, {}, NoManagedPolicies())
    except InvalidDocumentException as exc:
        print(f"{path}: the SAM transform fails: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(output, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
