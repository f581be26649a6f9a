// The coordinator's answers to CLI requests (ClientRequest): jobs, tokens,
// uploads, fetch and users. Runs on the event loop's thread, inside the
// turn's store batch (server.cc sends the reply once the turn committed).
//
// Roles: an admin may do everything. A submitter may submit, upload, and
// list, show, wait for, fetch and cancel its own jobs; everything else is
// PermissionDenied, and another user's job is NotFound (its id tells
// nothing).
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "base/peer_text.h"
#include "coordinator/admin_queries.h"
#include "coordinator/jobs/planner.h"
#include "coordinator/server_internal.h"
#include "crypto/codec.h"
#include "crypto/hash.h"
#include "crypto/token.h"
#include "tasks/kinds/kind.h"

namespace pcfarm {
namespace {

// Client names: what `pcfarm client add --name` accepts.
Status CheckClientName(const std::string& name) {
  if (name.empty() || name.size() > 64) return InvalidArgument("a client name has 1..64 characters");
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ||
          c == '@')) {
      return InvalidArgument("a client name may hold letters, digits and - _ . @ only");
    }
  }
  return Status::Ok();
}

// Fetch replies carry at most this much output (the reply limit is larger:
// one shard's output always fits).
constexpr size_t kFetchReplyTargetBytes = 8u << 20;
// A BlobRead that names no length gets this much.
constexpr size_t kBlobReadDefaultBytes = 4u << 20;

}  // namespace

std::string CoordinatorServer::Impl::ClientName(int64_t client_id) {
  auto it = client_names.find(client_id);
  if (it != client_names.end()) return it->second;
  auto all = store->ListClients();
  if (all.ok()) {
    for (const auto& c : *all) client_names[c.id] = c.name;
  }
  it = client_names.find(client_id);
  return it != client_names.end() ? it->second : "";
}

Result<wire::JobInfo> CoordinatorServer::Impl::JobToWire(const JobInfo& job) {
  // Jobs from before owners were recorded (0) are the admin's.
  return pcfarm::JobToWire(job, job.owner_client_id == 0 ? "admin"
                                                         : ClientName(job.owner_client_id));
}

Result<JobInfo> CoordinatorServer::Impl::OwnJob(const ClientInfo& client, int64_t id) {
  auto job = store->GetJob(id);
  bool mine = job.ok() && (client.role == ClientRole::kAdmin ||
                           job->owner_client_id == client.id);
  if (!mine) return NotFound("no job " + std::to_string(id));
  return job;
}

Status CoordinatorServer::Impl::HandleClient(const ClientInfo& client,
                                             wire::ClientRequest& req,
                                             wire::ClientReply* reply) {
  const bool admin = client.role == ClientRole::kAdmin;
  auto admin_only = [&](const char* what) {
    return PermissionDenied(std::string("only an admin may ") + what + " (you are '" +
                            client.name + "', a submitter)");
  };
  switch (req.msg_case()) {
    case wire::ClientRequest::kTokenCreate: {
      if (!admin) return admin_only("create enrollment tokens");
      const auto& t = req.token_create();
      if (t.uses() < 1 || t.uses() > 100000) {
        return InvalidArgument("uses must be 1..100000");
      }
      if (t.ttl_ms() <= 0) return InvalidArgument("ttl must be positive");
      EnrollmentToken token = MakeEnrollmentToken(
          AdvertisedEndpoint(config), keys.sign.public_key(),
          keys.curve.public_key(), clock->NowMs() + t.ttl_ms(), t.uses());
      PCFARM_RETURN_IF_ERROR(CheckEnrollmentToken(token));
      auto added = store->AddToken(HashToBytes(SecretHash(token.secret)),
                                   static_cast<int>(t.uses()), token.expires_ms);
      if (!added.ok()) return added.status();
      store->AddEvent("token_created", 0, 0,
                      "token for " + std::to_string(t.uses()) + " worker(s)")
          .IgnoreError();
      auto* out = reply->mutable_token_create();
      out->set_token(EncodeEnrollmentToken(token));
      out->set_expires_ms(token.expires_ms);
      out->set_uses(t.uses());
      return Status::Ok();
    }
    case wire::ClientRequest::kSubmit: {
      const auto& s = req.submit();
      // A retried submit whose reply was lost (a restart, a timeout): the
      // job its key made, without planning it again.
      const std::string& key = s.request_key();
      if (!key.empty()) {
        bool hex = key.size() >= 32 && key.size() <= 64;
        for (char c : key) hex = hex && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
        if (!hex) {
          return InvalidArgument("a request key is 32..64 lowercase hex digits");
        }
        auto known = store->FindJobByRequestKey(client.id, key);
        if (known.ok()) {
          spdlog::info("job {}: a retried submit by {} (request key {}) answers it", *known,
                       client.name, key);
          reply->mutable_submit()->set_job_id(static_cast<uint64_t>(*known));
          return Status::Ok();
        }
        if (known.status().code() != StatusCode::kNotFound) return known.status();
      }
      const JobPlanner* planner = FindPlanner(s.kind());
      if (!planner || !TaskKindRegistry::Builtin().Find(planner->task_kind())) {
        return InvalidArgument("unknown job kind '" + EscapePeerText(s.kind(), 64) + "'");
      }
      if (s.redundancy() < 1 || s.redundancy() > 16) {
        return InvalidArgument("redundancy must be 1..16");
      }
      // The policy: as asked, else auto for LLM jobs and redundant for bench
      // (a benchmark of the farm runs what it is told).
      // --redundancy R > 1 alone asks for R copies of every shard.
      VerifyPolicy verify = s.kind() == "bench" || s.redundancy() > 1
                                ? VerifyPolicy::kRedundant
                                : VerifyPolicy::kAuto;
      if (!s.verify().empty()) {
        PCFARM_ASSIGN_OR_RETURN(verify, ParseVerifyPolicy(s.verify()));
      }
      if (verify != VerifyPolicy::kRedundant && s.redundancy() > 1) {
        return InvalidArgument(std::string("--redundancy ") +
                               std::to_string(s.redundancy()) + " needs --verify redundant (" +
                               VerifyPolicyName(verify) + " decides the copies itself)");
      }
      PCFARM_ASSIGN_OR_RETURN(JobPlan plan, planner->Plan(s, *blobs));
      JobSpec spec;
      spec.kind = s.kind();
      spec.params = plan.params;
      spec.priority = static_cast<int>(s.priority());
      spec.redundancy = static_cast<int>(s.redundancy());
      spec.verify = verify;
      spec.shards = std::move(plan.shards);
      spec.blobs = plan.blobs;
      spec.owner_client_id = client.id;
      spec.request_key = key;
      spec.open_ended = plan.open_ended;
      PCFARM_ASSIGN_OR_RETURN(int64_t id, store->CreateJob(spec));
      job_shard_blobs[id] = planner->ShardBlobs(spec.params);
      store->AddEvent("job_submitted", id, 0,
                      s.kind() + " job with " + std::to_string(spec.shards.size()) +
                          " shards by " + client.name)
          .IgnoreError();
      spdlog::info("job {} submitted by {}: {} x {} (verify {}, redundancy {})", id,
                   client.name, spec.shards.size(), s.kind(), VerifyPolicyName(verify),
                   spec.redundancy);
      reply->mutable_submit()->set_job_id(static_cast<uint64_t>(id));
      assign_all_due = true;
      return Status::Ok();
    }
    case wire::ClientRequest::kListJobs: {
      PCFARM_ASSIGN_OR_RETURN(auto jobs,
                              admin ? store->ListJobs() : store->ListJobs("", 1000, client.id));
      auto* out = reply->mutable_list_jobs();
      for (const auto& j : jobs) {
        PCFARM_ASSIGN_OR_RETURN(auto w, JobToWire(j));
        w.clear_summary();
        *out->add_jobs() = std::move(w);
      }
      return Status::Ok();
    }
    case wire::ClientRequest::kJobStatus: {
      PCFARM_ASSIGN_OR_RETURN(JobInfo job,
                              OwnJob(client, int64_t(req.job_status().job_id())));
      PCFARM_ASSIGN_OR_RETURN(auto w, JobToWire(job));
      PCFARM_RETURN_IF_ERROR(AddJobVerification(*store, job.id, &w));
      *reply->mutable_job_status()->mutable_job() = std::move(w);
      return Status::Ok();
    }
    case wire::ClientRequest::kCancelJob: {
      int64_t id = static_cast<int64_t>(req.cancel_job().job_id());
      PCFARM_ASSIGN_OR_RETURN(JobInfo job, OwnJob(client, id));
      PCFARM_ASSIGN_OR_RETURN(auto report,
                              store->CancelJob(id, "cancelled by " + client.name));
      ActOn(report);
      job_shard_blobs.erase(id);
      PCFARM_ASSIGN_OR_RETURN(auto after, store->GetJob(id));
      PCFARM_ASSIGN_OR_RETURN(auto w, JobToWire(after));
      *reply->mutable_cancel_job()->mutable_job() = std::move(w);
      return Status::Ok();
    }
    case wire::ClientRequest::kListWorkers: {
      if (!admin) return admin_only("list workers");
      PCFARM_ASSIGN_OR_RETURN(auto workers, store->ListWorkers());
      auto* out = reply->mutable_list_workers();
      for (const auto& w : workers) {
        WorkerLiveState live;
        if (auto r = route_of.find(w.id); r != route_of.end()) {
          live.connected = true;
          auto p = peers.find(r->second);
          if (p != peers.end()) {
            live.running = uint32_t(p->second.running.size());
            live.paused = p->second.paused;
            live.paused_reason = p->second.paused_reason;
          }
        }
        if (auto old = outdated_workers.find(w.id); old != outdated_workers.end()) {
          live.outdated = true;
          live.outdated_version = old->second;
        }
        *out->add_workers() = WorkerToWire(w, live);
      }
      return Status::Ok();
    }
    case wire::ClientRequest::kWorkerBan: {
      const auto& b = req.worker_ban();
      if (!admin) {
        return admin_only(b.unban() ? "unban workers" : "quarantine workers");
      }
      const int64_t id = static_cast<int64_t>(b.worker_id());
      std::string reason = b.reason().empty() ? "by " + client.name
                                              : EscapePeerText(b.reason(), 200) +
                                                    " (" + client.name + ")";
      if (b.unban()) {
        PCFARM_RETURN_IF_ERROR(store->UnbanWorker(id, reason));
        spdlog::info("worker {} unbanned {}", id, reason);
      } else {
        PCFARM_ASSIGN_OR_RETURN(auto report,
                                scheduler.Quarantine(id, "quarantined " + reason));
        ActOn(report);
        DropWorker(id, "quarantined " + reason);
        assign_all_due = true;
        spdlog::info("worker {} quarantined {}", id, reason);
      }
      PCFARM_ASSIGN_OR_RETURN(WorkerInfo w, store->GetWorker(id));
      WorkerLiveState live;
      live.connected = route_of.count(id) > 0;
      *reply->mutable_worker_ban()->mutable_worker() = WorkerToWire(w, live);
      return Status::Ok();
    }
    case wire::ClientRequest::kStats: {
      if (!admin) return admin_only("read the coordinator's counters");
      auto* m = reply->mutable_stats()->mutable_counters();
      (*m)["messages_in"] = counters->messages_in;
      (*m)["bad_messages"] = counters->bad_messages;
      (*m)["results_accepted"] = counters->results_accepted;
      (*m)["results_rejected"] = counters->results_rejected;
      (*m)["results_replayed"] = counters->results_replayed;
      (*m)["results_forged"] = counters->results_forged;
      (*m)["shards_assigned"] = counters->shards_assigned;
      (*m)["workers_lost"] = counters->workers_lost;
      (*m)["unenrolled_messages"] = counters->unenrolled_messages;
      (*m)["unenrolled_dropped"] = counters->unenrolled_dropped;
      (*m)["results_invalid"] = counters->results_invalid;
      (*m)["events_suppressed"] = counters->events_suppressed;
      (*m)["events_pruned"] = counters->events_pruned;
      (*m)["blob_bytes_sent"] = counters->blob_bytes_sent;
      (*m)["blobs_removed"] = counters->blobs_removed;
      (*m)["blob_bytes_removed"] = counters->blob_bytes_removed;
      (*m)["upload_bytes_received"] = counters->upload_bytes_received;
      (*m)["uploads_completed"] = counters->uploads_completed;
      (*m)["uploads_deduplicated"] = counters->uploads_deduplicated;
      (*m)["output_uploads_completed"] = counters->output_uploads_completed;
      (*m)["leases_renewed"] = counters->leases_renewed;
      (*m)["workers_connected"] = peers.size();
      (*m)["workers_outdated"] = outdated_workers.size();
      (*m)["worker_version_refusals"] = counters->worker_version_refusals;
      (*m)["client_version_refusals"] = counters->client_version_refusals;
      for (size_t e = 0; e < kWireErrorCount; ++e) {
        auto err = static_cast<WireError>(e);
        (*m)[std::string("wire_") + WireErrorName(err)] = wire_errors.Get(err);
      }
      return Status::Ok();
    }
    case wire::ClientRequest::kUploadBegin: {
      PCFARM_ASSIGN_OR_RETURN(auto begun, uploads->Begin(req.upload_begin()));
      if (begun.present()) {
        counters->uploads_deduplicated++;
        // Stored before (or by a coordinator that crashed before it
        // recorded it): make sure the store knows it. The reply names it
        // (an upload by id has no hash in its request).
        PCFARM_ASSIGN_OR_RETURN(Hash256 hash, HashFromBytes(begun.hash()));
        PCFARM_RETURN_IF_ERROR(
            store->RecordBlob(HashToHex(hash), int64_t(req.upload_begin().size())));
      }
      *reply->mutable_upload_begin() = std::move(begun);
      return Status::Ok();
    }
    case wire::ClientRequest::kUploadChunk: {
      std::string hex;
      int64_t size = 0;
      PCFARM_ASSIGN_OR_RETURN(
          auto got, uploads->Chunk(std::move(*req.mutable_upload_chunk()), &hex, &size));
      counters->upload_bytes_received += req.upload_chunk().data().size();
      if (!hex.empty()) {
        PCFARM_RETURN_IF_ERROR(store->RecordBlob(hex, size));
        counters->uploads_completed++;
        spdlog::info("blob {} ({} bytes) uploaded by {}", hex.substr(0, 16), size,
                     client.name);
      }
      *reply->mutable_upload_chunk() = std::move(got);
      return Status::Ok();
    }
    case wire::ClientRequest::kFetch: {
      const auto& f = req.fetch();
      PCFARM_ASSIGN_OR_RETURN(JobInfo job, OwnJob(client, int64_t(f.job_id())));
      if (job.state != "succeeded" && !f.partial()) {
        return FailedPrecondition(
            "job " + std::to_string(job.id) + " is " + job.state + " (" +
            std::to_string(job.shards_accepted) + " of " + std::to_string(job.shards_total) +
            " shards accepted); pass --partial to fetch what is accepted so far");
      }
      const JobPlanner* planner = FindPlanner(job.kind);
      if (!planner) return Internal("no planner for job kind '" + job.kind + "'");
      if (planner->open_ended()) {
        // Its rounds and where its output lies, in one reply.
        PCFARM_ASSIGN_OR_RETURN(auto rounds, store->JobRounds(job.id));
        auto* out = reply->mutable_fetch();
        out->set_data(planner->RoundsOutput(job, rounds));
        out->set_next_shard(uint32_t(job.shards_total));
        out->set_done(true);
        PCFARM_ASSIGN_OR_RETURN(auto w, JobToWire(job));
        *out->mutable_job() = std::move(w);
        return Status::Ok();
      }
      PCFARM_ASSIGN_OR_RETURN(auto results,
                              store->AcceptedResults(job.id, int64_t(f.from_shard()),
                                                     int64_t(kFetchReplyTargetBytes)));
      std::vector<FetchedShard> shards;
      for (auto& r : results) {
        shards.push_back(FetchedShard{r.shard_idx, std::move(r.params), std::move(r.body),
                                      std::move(r.worker_name)});
      }
      auto* out = reply->mutable_fetch();
      std::string data = planner->Output(shards);
      uint32_t next = shards.empty() ? f.from_shard() : uint32_t(shards.back().index + 1);
      bool done = shards.empty() || next >= uint32_t(job.shards_total);
      if (done) data += planner->OutputTail(job);
      out->set_data(std::move(data));
      out->set_next_shard(next);
      out->set_done(done);
      PCFARM_ASSIGN_OR_RETURN(auto w, JobToWire(job));
      *out->mutable_job() = std::move(w);
      return Status::Ok();
    }
    case wire::ClientRequest::kBlobRead: {
      const auto& b = req.blob_read();
      PCFARM_ASSIGN_OR_RETURN(Hash256 hash, HashFromBytes(b.hash()));
      const std::string hex = HashToHex(hash);
      if (!admin) {
        PCFARM_ASSIGN_OR_RETURN(bool mine, store->OwnerHasJobBlob(client.id, hex));
        if (!mine) return NotFound("no blob " + hex + " among your jobs'");
      }
      PCFARM_ASSIGN_OR_RETURN(int64_t size, blobs->Size(hex));
      const int64_t offset = int64_t(b.offset());
      if (b.offset() > uint64_t(size)) {
        return InvalidArgument("offset " + std::to_string(b.offset()) + " is past the end of blob " +
                               hex + " (" + std::to_string(size) + " bytes)");
      }
      const int64_t want = std::min<int64_t>(
          {int64_t(b.length() ? b.length() : kBlobReadDefaultBytes), int64_t(kFetchReplyTargetBytes),
           size - offset});
      auto* out = reply->mutable_blob_read();
      out->set_total_size(uint64_t(size));
      if (want > 0) {
        PCFARM_ASSIGN_OR_RETURN(std::string data, blobs->ReadChunk(hex, offset, want));
        out->set_data(std::move(data));
      }
      return Status::Ok();
    }
    case wire::ClientRequest::kClientAdd: {
      if (!admin) return admin_only("add clients");
      const auto& a = req.client_add();
      PCFARM_RETURN_IF_ERROR(CheckClientName(a.name()));
      ClientRole role;
      if (a.role() == "submitter" || a.role().empty()) {
        role = ClientRole::kSubmitter;
      } else if (a.role() == "admin") {
        role = ClientRole::kAdmin;
      } else {
        return InvalidArgument("a role is 'submitter' or 'admin', not '" +
                               EscapePeerText(a.role(), 64) + "'");
      }
      if (a.curve_pk().size() != kCurveKeyBytes) {
        return InvalidArgument("a client key is 32 bytes");
      }
      PCFARM_ASSIGN_OR_RETURN(int64_t id, store->AddClient(a.name(), a.curve_pk(), role));
      client_names[id] = a.name();
      store->AddEvent("client_added", 0, 0,
                      "client '" + a.name() + "' (" + ClientRoleName(role) + ") added by " +
                          client.name)
          .IgnoreError();
      reply->mutable_client_add()->set_client_id(uint64_t(id));
      return Status::Ok();
    }
    case wire::ClientRequest::kClientList: {
      if (!admin) return admin_only("list clients");
      PCFARM_ASSIGN_OR_RETURN(auto all, store->ListClients());
      auto* out = reply->mutable_client_list();
      for (const auto& c : all) {
        auto* e = out->add_clients();
        e->set_client_id(uint64_t(c.id));
        e->set_name(c.name);
        e->set_role(ClientRoleName(c.role));
        e->set_created_ms(c.created_ms);
      }
      return Status::Ok();
    }
    case wire::ClientRequest::kClientRemove: {
      if (!admin) return admin_only("remove clients");
      const std::string& name = req.client_remove().name();
      PCFARM_ASSIGN_OR_RETURN(ClientInfo gone, store->FindClientByName(name));
      PCFARM_RETURN_IF_ERROR(store->RemoveClient(name));
      client_names.erase(gone.id);
      store->AddEvent("client_removed", 0, 0,
                      "client '" + name + "' removed by " + client.name)
          .IgnoreError();
      reply->mutable_client_remove();
      return Status::Ok();
    }
    default:
      return InvalidArgument("unknown request");
  }
}

}  // namespace pcfarm
