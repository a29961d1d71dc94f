// policy get|set: the placement policy's knobs (AdminService GetPolicy, SetPolicy).
#include <iostream>

#include "client/cachectl/commands.h"

namespace cachesvc::cachectl {
namespace {

void PrintKnobs(const google::protobuf::RepeatedPtrField<v1::PolicyKnob>& knobs) {
  Table table({{"KNOB"}, {"VALUE"}, {"HELP"}});
  for (const auto& k : knobs) table.AddRow({k.name(), k.value(), k.help()});
  table.Print(std::cout);
}

nlohmann::json KnobsJson(const google::protobuf::RepeatedPtrField<v1::PolicyKnob>& knobs) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& k : knobs) out.push_back(ToJson(k));
  return out;
}

}  // namespace

int PolicyGet(const Globals& g) {
  client::AdminClient client = NewClient(g);
  auto policy = client.GetPolicy();
  if (!policy.ok()) return ReportError(g, policy.status());
  if (g.json) {
    PrintJson({{"policy", policy->policy()}, {"knobs", KnobsJson(policy->knobs())}});
    return kExitOk;
  }
  std::cout << "policy " << policy->policy() << "\n\n";
  PrintKnobs(policy->knobs());
  return kExitOk;
}

int PolicySet(const Globals& g, const std::vector<std::string>& assignments) {
  auto knobs = ParseKnobs(assignments);
  if (!knobs.ok()) return UsageError(g, knobs.status());
  v1::SetPolicyRequest request;
  for (auto& k : *knobs) *request.add_knobs() = std::move(k);
  client::AdminClient client = NewClient(g);
  // All or none: the daemon checks every knob before it applies any.
  auto after = client.SetPolicy(request);
  if (!after.ok()) return ReportError(g, after.status());
  if (g.json) {
    PrintJson({{"knobs", KnobsJson(after->knobs())}});
    return kExitOk;
  }
  PrintKnobs(after->knobs());
  return kExitOk;
}

}  // namespace cachesvc::cachectl
