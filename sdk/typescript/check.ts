// A small program against gigafab's API through the client that
// @hey-api/openapi-ts generates from the server's OpenAPI document. CI
// compiles it with `tsc --strict` (.ci/openapi.sh): every answer it reads
// is typed by the document, so a missing or wrong schema fails the build.
import { createClient } from './generated/client';
import {
  cancelJob,
  createToken,
  createUser,
  getFleet,
  getJob,
  getUsage,
  health,
  listJobs,
  submitJob,
  whoami,
} from './generated/sdk.gen';
import type { Job, JobState, NodeState, Role } from './generated/types.gen';

export async function tour(baseUrl: string, token: string): Promise<string[]> {
  const client = createClient({ baseUrl, auth: () => token });
  const out: string[] = [];

  const h = await health({ client });
  if (h.data) {
    const status: 'ok' | 'controller_stopped' = h.data.status;
    out.push(`${status} ${h.data.version}`);
  }

  const me = await whoami({ client });
  if (me.data) {
    const role: Role = me.data.role;
    out.push(`${me.data.user} is ${role} of ${me.data.org ?? 'no organisation'}`);
  }

  const sub = await submitJob({
    client,
    body: { allocation: 1, gpus: 1, command: ['nvidia-smi'] },
    headers: { 'Idempotency-Key': 'tour-1' },
  });
  if (sub.error) {
    out.push(`refused: ${sub.error.error}: ${sub.error.message}`);
    return out;
  }
  const job: Job = sub.data;
  const state: JobState = job.state;
  out.push(`job ${job.id} ${state} on allocation ${job.allocation}, submitted ${job.submitted_at}`);

  const again = await getJob({ client, path: { id: job.id } });
  for (const e of again.data?.events ?? []) {
    out.push(`${e.at} ${e.kind}: ${e.message}`);
  }

  const page = await listJobs({ client, query: { state: 'queued', limit: 10 } });
  for (const item of page.data?.items ?? []) {
    out.push('name' in item ? `${item.id} ${item.name}` : `unreadable ${item.id ?? '?'}`);
  }

  const cancelled = await cancelJob({ client, path: { id: job.id } });
  if (cancelled.data) {
    out.push(`now ${cancelled.data.state}`);
  }

  const fleet = await getFleet({ client });
  for (const n of fleet.data?.nodes ?? []) {
    const s: NodeState = n.state;
    out.push(`${n.name}: ${n.free}/${n.accelerators} free, ${s}, ${n.health}`);
  }

  const usage = await getUsage({ client });
  for (const a of usage.data?.items ?? []) {
    out.push(`${a.name}: ${a.used_gpu_hours.toFixed(1)} of ${a.granted_gpu_hours} GPU-h (${a.state})`);
  }

  const user = await createUser({ client, body: { name: 'ada', org: 'default' } });
  if (user.data) {
    out.push(`user ${user.data.id} ${user.data.name}, first token ${user.data.token.slice(0, 4)}…`);
    const t = await createToken({ client, body: { user: user.data.id, expires_in_days: 7 } });
    if (t.data) {
      out.push(`token ${t.data.id} until ${t.data.expires_at}`);
    }
  }
  return out;
}
