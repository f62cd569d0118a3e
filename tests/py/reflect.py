"""A gRPC client that knows nothing of weft but what a node's server reflection tells it,
as grpcurl does: it lists the services, then calls the health protocol and Store.Put and
Store.Get with messages built from the descriptors reflection returned. No .proto file
and no generated code of weft's is at hand.

    reflect.py CA CERT KEY PARTITION KEY VALUE ENDPOINT [ENDPOINT ...]

Writes go to each endpoint in turn until one is the partition's primary (a client with
no routing, told "not the primary" by the others). Prints one JSON object.
"""

import base64
import json
import sys

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main():
    ca, cert, key, partition, rkey, value, *endpoints = sys.argv[1:]
    creds = grpc.ssl_channel_credentials(
        open(ca, "rb").read(), open(key, "rb").read(), open(cert, "rb").read()
    )
    channels = [grpc.secure_channel(e, creds) for e in endpoints]
    db = ProtoReflectionDescriptorDatabase(channels[0])
    pool = DescriptorPool(db)
    services = sorted(db.get_services())

    def call(channel, path, fields):
        service, method = path.rsplit("/", 1)
        m = pool.FindServiceByName(service).FindMethodByName(method)
        req_type = message_factory.GetMessageClass(m.input_type)
        resp_type = message_factory.GetMessageClass(m.output_type)
        stub = channel.unary_unary(
            f"/{service}/{method}",
            request_serializer=req_type.SerializeToString,
            response_deserializer=resp_type.FromString,
        )
        reply = stub(json_format.ParseDict(fields, req_type()), timeout=10)
        return json_format.MessageToDict(reply)

    b64 = lambda s: base64.b64encode(s.encode()).decode()
    out = {"services": services}
    out["methods"] = {
        s: sorted(m.name for m in pool.FindServiceByName(s).methods) for s in services
    }
    out["health"] = call(channels[0], "grpc.health.v1.Health/Check", {})
    out["store_health"] = call(
        channels[0], "grpc.health.v1.Health/Check", {"service": "weft.v1.Store"}
    )
    put = {
        "partition": partition,
        "put": {"table": "default", "key": b64(rkey), "value": b64(value)},
    }
    refusals = []
    for channel in channels:
        try:
            out["put"] = call(channel, "weft.v1.Store/Put", put)
            get = {
                "header": {"partition": partition, "mode": "READ_MODE_LINEARIZABLE"},
                "table": "default",
                "key": b64(rkey),
            }
            out["get"] = call(channel, "weft.v1.Store/Get", get)
            break
        except grpc.RpcError as e:
            refusals.append({"code": e.code().name, "details": e.details()})
    out["refusals"] = refusals
    print(json.dumps(out))


if __name__ == "__main__":
    main()
