// Server reflection of the relay binary as a client sees it: every listed service resolves.
// This binary holds grpc-proto's reflection stubs, so it must not link grpc++_reflection (whose
// own copy of them would clash): it drives the real switchboard-server as a child process.
#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/descriptor_database.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "support/process.hpp"

namespace switchboard {
namespace {

namespace reflection = ::grpc::reflection::v1alpha;
using namespace std::chrono_literals;

// What `grpcurl list` / `buf curl --list-methods` do: list the services, then for each one ask
// for the file defining it (the server adds the files it depends on) and build the service's
// descriptor from nothing but the answers.
TEST(GatewayReflection, EveryListedServiceResolvesToItsDescriptor) {
  test::ServerProcess server(SWITCHBOARD_SERVER_BINARY);
  const auto port = server.grpc_port();
  ASSERT_NE(port, 0) << "the relay printed no gRPC address";
  auto stub = reflection::ServerReflection::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 20s);
  auto stream = stub->ServerReflectionInfo(&context);

  reflection::ServerReflectionRequest list;
  list.set_list_services("");
  ASSERT_TRUE(stream->Write(list));
  reflection::ServerReflectionResponse response;
  ASSERT_TRUE(stream->Read(&response));
  ASSERT_TRUE(response.has_list_services_response()) << response.DebugString();
  std::vector<std::string> services;
  for (const auto& service : response.list_services_response().service()) {
    services.push_back(service.name());
  }
  const std::set<std::string> listed(services.begin(), services.end());
  for (const char* expected : {"switchboard.v1.SwitchboardService", "grpc.health.v1.Health",
                               "grpc.reflection.v1alpha.ServerReflection"}) {
    EXPECT_TRUE(listed.contains(expected)) << expected << " is not listed";
  }

  std::map<std::string, google::protobuf::FileDescriptorProto> files;  // by file name
  const auto take_files = [&](const reflection::ServerReflectionResponse& answer) {
    for (const auto& bytes : answer.file_descriptor_response().file_descriptor_proto()) {
      google::protobuf::FileDescriptorProto file;
      ASSERT_TRUE(file.ParseFromString(bytes));
      files.emplace(file.name(), std::move(file));
    }
  };
  for (const auto& service : services) {
    reflection::ServerReflectionRequest request;
    request.set_file_containing_symbol(service);
    ASSERT_TRUE(stream->Write(request));
    ASSERT_TRUE(stream->Read(&response));
    EXPECT_FALSE(response.has_error_response()) << "file_containing_symbol " << service << ": "
                                                << response.error_response().error_message();
    take_files(response);
  }
  // A file this stream has sent before is not sent again, so dependencies are looked for among
  // everything received; one still missing is asked for by name, as clients do.
  for (bool added = true; added;) {
    added = false;
    std::vector<std::string> missing;
    for (const auto& [name, file] : files) {
      for (const auto& dependency : file.dependency()) {
        if (!files.contains(dependency)) missing.push_back(dependency);
      }
    }
    for (const auto& name : missing) {
      reflection::ServerReflectionRequest request;
      request.set_file_by_filename(name);
      ASSERT_TRUE(stream->Write(request));
      ASSERT_TRUE(stream->Read(&response));
      ASSERT_FALSE(response.has_error_response())
          << "file_by_filename " << name << ": " << response.error_response().error_message();
      const auto before = files.size();
      take_files(response);
      ASSERT_TRUE(files.contains(name)) << "file_by_filename " << name << " answered another file";
      added = added || files.size() > before;
    }
  }
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());

  google::protobuf::SimpleDescriptorDatabase database;
  for (const auto& [name, file] : files) ASSERT_TRUE(database.Add(file)) << name;
  google::protobuf::DescriptorPool pool(&database);
  for (const auto& service : services) {
    const auto* descriptor = pool.FindServiceByName(service);
    ASSERT_NE(descriptor, nullptr) << service << " does not resolve from what reflection served";
    EXPECT_GT(descriptor->method_count(), 0) << service;
  }
}

}  // namespace
}  // namespace switchboard
