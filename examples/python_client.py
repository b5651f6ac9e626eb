#!/usr/bin/python3
"""Streams a completion from a Strata gateway with stubs generated from proto/.

The build generates the stubs into build/python (protoc with Debian's
grpc_python_plugin); point --stubs there, or generate them yourself:

  protoc -I proto --python_out=OUT --grpc_python_out=OUT \
      --plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin proto/strata/v1/*.proto

Usage: python_client.py --address HOST:PORT --prompt TEXT [--max-tokens N]
         [--temperature T] [--seed S] [--stop STR ...] [--stubs DIR] [--json]
         [--chat] [--system TEXT]
With --chat (or --system) the prompt goes as a user message in the
`messages` form, which the gateway renders with the model's chat template.
With --json it prints one JSON object (text, token ids, finish reason) instead
of streaming text; the test suite uses that to compare with the C++ client.
"""
import argparse
import json
import os
import sys


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="gateway host:port")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stop", action="append", default=[])
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline in seconds")
    parser.add_argument("--stubs", default=os.path.join(here, "..", "build", "python"))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--chat", action="store_true", help="send the prompt as a user message")
    parser.add_argument("--system", help="a system message before it (implies --chat)")
    parser.add_argument("--api-key", default=os.environ.get("STRATA_API_KEY"),
                        help="sent as 'authorization: Bearer KEY' (default: $STRATA_API_KEY)")
    parser.add_argument("--tls-ca", help="connect with TLS, trusting this CA certificate (PEM)")
    args = parser.parse_args()

    sys.path.insert(0, args.stubs)
    import grpc
    from strata.v1 import generation_pb2, generation_pb2_grpc

    if args.chat or args.system:
        messages = [generation_pb2.ChatMessage(role="system", content=args.system)] \
            if args.system else []
        messages.append(generation_pb2.ChatMessage(role="user", content=args.prompt))
        prompt = {"messages": generation_pb2.Conversation(messages=messages)}
    else:
        prompt = {"prompt": args.prompt}
    request = generation_pb2.GenerateRequest(
        **prompt,
        max_tokens=args.max_tokens,
        sampling=generation_pb2.SamplingParameters(temperature=args.temperature, seed=args.seed),
        stop=args.stop,
    )
    text, tokens, finished = [], [], None
    if args.tls_ca:
        with open(args.tls_ca, "rb") as f:
            channel = grpc.secure_channel(args.address, grpc.ssl_channel_credentials(f.read()))
    else:
        channel = grpc.insecure_channel(args.address)
    metadata = [("authorization", "Bearer " + args.api_key)] if args.api_key else []
    with channel:
        stub = generation_pb2_grpc.GenerationStub(channel)
        try:
            for response in stub.Generate(request, timeout=args.timeout, metadata=metadata):
                if response.HasField("delta"):
                    text.append(response.delta.text)
                    tokens.extend(response.delta.token_ids)
                    if not args.json:
                        sys.stdout.write(response.delta.text)
                        sys.stdout.flush()
                else:
                    finished = response.finished
        except grpc.RpcError as e:
            print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    reason = generation_pb2.FinishReason.Name(finished.reason) if finished else "NONE"
    if args.json:
        print(json.dumps({"text": "".join(text), "token_ids": tokens, "finish_reason": reason,
                          "completion_tokens": finished.completion_tokens if finished else 0}))
    else:
        print(f"\n[{reason}, {len(tokens)} tokens]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
