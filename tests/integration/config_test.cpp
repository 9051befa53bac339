// switchboard-server configuration: precedence of file, environment and flags, the printed
// configuration, refusal of invalid settings, and the generated reference in the docs.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "support/child_server.hpp"

namespace switchboard {
namespace {

using test::run_server;

const std::string kServer = SWITCHBOARD_SERVER_BINARY;

class TempFile {
public:
  explicit TempFile(const std::string& text) {
    path_ = std::filesystem::temp_directory_path() /
            ("switchboard-config-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++) +
             ".toml");
    std::ofstream(path_) << text;
  }
  ~TempFile() { std::filesystem::remove(path_); }
  std::string path() const { return path_.string(); }

private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

/// The value printed for `key` by --print-config ("key = value" line), quotes included.
std::string printed(const std::string& config, const std::string& key) {
  std::istringstream lines(config);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(key + " = ", 0) == 0) return line.substr(key.size() + 3);
  }
  return "<absent>";
}

TEST(Config, DefaultsArePrinted) {
  const auto result = run_server(kServer, {"--print-config"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(printed(result.out, "listen"), "\"127.0.0.1:7400\"");
  EXPECT_EQ(printed(result.out, "admin_listen"), "\"127.0.0.1:7402\"");
  EXPECT_EQ(printed(result.out, "max_frame"), "65536");
  EXPECT_EQ(printed(result.out, "drain_timeout"), "\"30s\"");
  EXPECT_EQ(printed(result.out, "admin_introspection"), "false");
}

TEST(Config, FlagBeatsEnvironmentBeatsFileBeatsDefault) {
  TempFile file(
      "max_frame = 100000\n"
      "stream_window = \"512KiB\"\n"
      "max_channels = 7\n"
      "drain_timeout = \"5s\"\n");
  const auto result =
      run_server(kServer, {"--config", file.path(), "--max-channels", "9", "--print-config"},
                 {{"SWITCHBOARD_STREAM_WINDOW", "300000"}, {"SWITCHBOARD_MAX_CHANNELS", "8"}});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(printed(result.out, "max_frame"), "100000");             // file over default
  EXPECT_EQ(printed(result.out, "stream_window"), "300000");         // environment over file
  EXPECT_EQ(printed(result.out, "max_channels"), "9");               // flag over environment
  EXPECT_EQ(printed(result.out, "drain_timeout"), "\"5s\"");         // file
  EXPECT_EQ(printed(result.out, "max_peers_per_channel"), "10000");  // default
}

TEST(Config, ConfigFileFromEnvironmentAndOldFlagNames) {
  TempFile file("max_connections = 12\n");
  const auto result = run_server(
      kServer, {"--drain-timeout-ms", "1500", "--max-streams", "3", "--print-config"},
      {{"SWITCHBOARD_CONFIG", file.path()}, {"SWITCHBOARD_ADMIN_INTROSPECTION", "true"}});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(printed(result.out, "max_connections"), "12");
  EXPECT_EQ(printed(result.out, "drain_timeout"), "\"1500ms\"");
  EXPECT_EQ(printed(result.out, "max_streams_per_connection"), "3");
  EXPECT_EQ(printed(result.out, "admin_introspection"), "true");
}

TEST(Config, PrintedConfigurationLoadsBackToTheSame) {
  const auto first = run_server(
      kServer, {"--grpc-listen", "", "--admin-introspection", "--keepalive-interval", "2m",
                "--log-format", "json", "--max-connection-buffer", "32MiB", "--print-config"});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_EQ(printed(first.out, "grpc_listen"), "\"\"");
  EXPECT_EQ(printed(first.out, "keepalive_interval"), "\"2m\"");
  EXPECT_EQ(printed(first.out, "max_connection_buffer"), std::to_string(32 * 1024 * 1024));
  TempFile file(first.out);
  const auto second = run_server(kServer, {"--config", file.path(), "--print-config"});
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_EQ(second.out, first.out);
}

struct Invalid {
  std::string name;
  std::vector<std::string> args;
  std::map<std::string, std::string> env;
  std::string file;                       // config file text, if any
  std::vector<std::string> must_mention;  // in the error message
};

class InvalidConfig : public ::testing::TestWithParam<Invalid> {};

TEST_P(InvalidConfig, IsRefusedWithExitCode2NamingTheKey) {
  const auto& c = GetParam();
  std::optional<TempFile> file;
  auto args = c.args;
  if (!c.file.empty()) {
    file.emplace(c.file);
    args.insert(args.begin(), {"--config", file->path()});
  }
  // Loopback ephemeral ports first, so a case's own address flags (later) override them.
  args.insert(args.begin(), {"--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
                             "--admin-listen", "127.0.0.1:0"});
  const auto result = run_server(kServer, args, c.env);
  EXPECT_EQ(result.exit_code, 2) << result.out << result.err;
  for (const auto& text : c.must_mention) {
    EXPECT_NE(result.err.find(text), std::string::npos)
        << "expected \"" << text << "\" in: " << result.err;
  }
  EXPECT_EQ(result.out.find("listening core"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(
    Kinds, InvalidConfig,
    ::testing::Values(
        Invalid{"UnknownFileKey",
                {},
                {},
                "max_frame = 2048\n\nmax_frmae = 4096\n",
                {"max_frmae", "unknown key", "line 3"}},
        Invalid{"WrongTypeInFile", {}, {}, "max_frame = \"big\"\n", {"max_frame", "line 1"}},
        Invalid{"StringForInteger",
                {},
                {},
                "max_channels = \"7\"\n",
                {"max_channels", "expected an integer", "line 1"}},
        Invalid{"OutOfRangeInFile",
                {},
                {},
                "# limits\nmax_frame = 512\n",
                {"max_frame", "out of range", "line 2"}},
        Invalid{"BadAddressInFile",
                {},
                {},
                "admin_listen = \"nowhere:80\"\n",
                {"admin_listen", "line 1"}},
        Invalid{"SyntaxError", {}, {}, "max_frame = = 3\n", {"line 1"}},
        Invalid{"OutOfRangeFlag",
                {"--max-frame", "99999999"},
                {},
                "",
                {"--max-frame", "max_frame", "out of range"}},
        Invalid{"BadDurationFlag",
                {"--drain-timeout", "soon"},
                {},
                "",
                {"drain_timeout", "not a duration"}},
        Invalid{"BadAddressFlag",
                {"--admin-listen", "127.0.0.1:99999"},
                {},
                "",
                {"admin_listen", "out of range"}},
        Invalid{"BadChoiceFlag", {"--log-format", "xml"}, {}, "", {"log_format", "xml"}},
        Invalid{"WrongTypeEnvironment",
                {},
                {{"SWITCHBOARD_MAX_FRAME", "lots"}},
                "",
                {"SWITCHBOARD_MAX_FRAME", "max_frame"}},
        Invalid{"UnknownEnvironment",
                {},
                {{"SWITCHBOARD_MAX_FRAMES", "2048"}},
                "",
                {"SWITCHBOARD_MAX_FRAMES", "unknown key"}},
        Invalid{"InconsistentLimits", {"--max-frame", "1MiB"}, {}, "", {"read_block_size"}},
        Invalid{"EtcdCertificateWithoutKey",
                {"--cluster-etcd-cert-file", "/etc/relay.pem"},
                {},
                "",
                {"cluster_etcd_cert_file", "cluster_etcd_key_file", "set both or neither"}},
        Invalid{"EtcdUserWithoutPassword",
                {},
                {{"SWITCHBOARD_CLUSTER_ETCD_USER", "relay"}},
                "",
                {"cluster_etcd_user", "cluster_etcd_password_file", "set both or neither"}}),
    [](const ::testing::TestParamInfo<Invalid>& param_info) { return param_info.param.name; });

TEST(Config, SampleFileLoadsAndHoldsTheDefaults) {
  const auto sample = run_server(
      kServer, {"--config", SWITCHBOARD_SOURCE_DIR "/docs/switchboard.toml", "--print-config"});
  ASSERT_EQ(sample.exit_code, 0) << sample.err;
  const auto defaults = run_server(kServer, {"--print-config"});
  EXPECT_EQ(sample.out, defaults.out);
}

TEST(Config, UnknownFlagIsInvalidConfiguration) {
  const auto result = run_server(kServer, {"--max-frames", "2048"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("--max-frames"), std::string::npos) << result.err;
}

TEST(Config, ReferenceInOperationsDocIsTheGeneratedOne) {
  const auto result = run_server(kServer, {"--print-config-reference"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  std::ifstream doc(SWITCHBOARD_SOURCE_DIR "/docs/OPERATIONS.md");
  ASSERT_TRUE(doc) << "docs/OPERATIONS.md is missing";
  std::stringstream text;
  text << doc.rdbuf();
  const std::string begin =
      "<!-- BEGIN CONFIG REFERENCE (generated: switchboard-server "
      "--print-config-reference) -->\n";
  const std::string end = "<!-- END CONFIG REFERENCE -->";
  const auto from = text.str().find(begin);
  const auto to = text.str().find(end);
  ASSERT_NE(from, std::string::npos);
  ASSERT_NE(to, std::string::npos);
  EXPECT_EQ(text.str().substr(from + begin.size(), to - from - begin.size()), result.out)
      << "regenerate the block with: switchboard-server --print-config-reference";
}

}  // namespace
}  // namespace switchboard
