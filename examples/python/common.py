"""Helpers shared by verify.py and verify_batch.py.

- import the stubs that generate.sh writes to gen/;
- build a VerifyIdCardRequest from an image file or an http(s) URL;
- turn a result or an error into plain JSON-ready dicts, decoding the
  google.rpc error details (ErrorInfo, BadRequest, RetryInfo, ...) that the
  gateway puts in the `grpc-status-details-bin` trailer.
"""

import pathlib
import sys

from google.protobuf.json_format import MessageToDict
from google.rpc import code_pb2, error_details_pb2, status_pb2

GEN_DIR = pathlib.Path(__file__).resolve().parent / "gen"
if not GEN_DIR.is_dir():
    sys.exit(f"{GEN_DIR} is missing: run PYTHON=<this python> examples/python/generate.sh first")
sys.path.insert(0, str(GEN_DIR))

from faceid.v1 import faceid_pb2, faceid_pb2_grpc  # noqa: E402  (generated)

# The detail messages the gateway sends, by the key they get in our JSON.
DETAIL_TYPES = {
    "error_info": error_details_pb2.ErrorInfo,
    "bad_request": error_details_pb2.BadRequest,
    "retry_info": error_details_pb2.RetryInfo,
    "quota_failure": error_details_pb2.QuotaFailure,
    "precondition_failure": error_details_pb2.PreconditionFailure,
}

Stub = faceid_pb2_grpc.IdCardVerificationServiceStub


def build_request(source, checks=()):
    """A VerifyIdCardRequest for an image path or a URL (the gateway checks the URL)."""
    request = faceid_pb2.VerifyIdCardRequest()
    if "://" in source:
        request.image_url = source
    else:
        request.image = pathlib.Path(source).read_bytes()
    for name in checks:
        setattr(request.checks, name, True)
    return request


def check_names():
    """The switches of faceid.v1.Checks, e.g. copy_warn."""
    return [field.name for field in faceid_pb2.Checks.DESCRIPTOR.fields]


def result_to_dict(response):
    """A VerifyIdCardResponse as a dict (proto field names; the portrait as its size)."""
    result = MessageToDict(response, preserving_proto_field_name=True)
    result.pop("portrait", None)
    result["portrait_bytes"] = len(response.portrait)
    return result


def status_to_dict(status):
    """A google.rpc.Status as a dict: code name, message and each known detail."""
    error = {"code": code_pb2.Code.Name(status.code), "message": status.message}
    by_name = {cls.DESCRIPTOR.full_name: (key, cls) for key, cls in DETAIL_TYPES.items()}
    for detail in status.details:
        key, cls = by_name.get(detail.TypeName(), (None, None))
        if cls is None:
            error.setdefault("other_details", []).append(detail.type_url)
            continue
        message = cls()
        detail.Unpack(message)
        error[key] = MessageToDict(message, preserving_proto_field_name=True)
    return error


def rpc_error_to_dict(err):
    """A grpc.RpcError as a dict, with the details from `grpc-status-details-bin`."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_to_dict(status_pb2.Status.FromString(value))
    # No rich status (e.g. a deadline the client enforced): code and message only.
    return {"code": err.code().name, "message": err.details()}
