"""The gRPC door: AgentService, ToolService and ConfigService over the runtime, plus the standard
health and reflection services. ``agent serve --grpc-port`` starts it; protos/agent.proto is its
contract and ``gen/`` holds the stubs generated from it by scripts/gen-proto."""
