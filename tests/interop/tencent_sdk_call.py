"""Calls CheckIdCardInformation through Tencent's official Python SDK.

Used by tests/api/interop.rs to prove the simulator speaks Tencent's wire
format: the SDK signs, sends and parses exactly as it would against Tencent.

usage: tencent_sdk_call.py HOST:PORT SECRET_ID SECRET_KEY IMAGE_FILE
prints one JSON object: {"ok": true, ...fields} or {"ok": false, "code": ...}
"""

import base64
import json
import sys

from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.faceid.v20180301 import faceid_client, models


def main() -> None:
    endpoint, secret_id, secret_key, image_path = sys.argv[1:5]
    cred = credential.Credential(secret_id, secret_key)
    profile = ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=endpoint, reqTimeout=10))
    client = faceid_client.FaceidClient(cred, "", profile)

    request = models.CheckIdCardInformationRequest()
    with open(image_path, "rb") as image:
        request.ImageBase64 = base64.b64encode(image.read()).decode("ascii")
    request.Config = json.dumps({"CopyWarn": True})

    try:
        response = client.CheckIdCardInformation(request)
    except TencentCloudSDKException as error:
        print(json.dumps({"ok": False, "code": error.get_code(), "request_id": error.get_request_id()}))
        return
    print(json.dumps({
        "ok": True,
        "Result": response.Result,
        "Sim": response.Sim,
        "IdNum": response.IdNum,
        "Portrait": bool(response.Portrait),
        "RequestId": response.RequestId,
    }))


if __name__ == "__main__":
    main()
