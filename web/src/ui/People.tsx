import { useEffect, useRef, useState } from "preact/hooks";
import { LIMITS, type Conversation, type Member, type User } from "../../../protocol";
import { ApiRequestError } from "../lib/api";
import { lastSeen } from "../state/format";
import { Avatar } from "./Avatar";
import { ConfirmDialog } from "./ConfirmDialog";
import { useServices } from "./context";
import { EncryptionInfo } from "./Encryption";
import { useEscape, useFocusHandoff } from "./focus";
import { Icon } from "./icons";
import { VerifiedMark } from "./SafetyNumber";
import { ConversationSettingsSection } from "./ConversationSettings";

/** Username prefix search, debounced; results as buttons. */
function useUserSearch(query: string): { users: User[]; searching: boolean } {
  const { store } = useServices();
  const [users, setUsers] = useState<User[]>([]);
  const [searching, setSearching] = useState(false);
  useEffect(() => {
    const q = query.trim();
    if (!q) {
      setUsers([]);
      return;
    }
    let live = true;
    setSearching(true);
    const t = setTimeout(() => {
      store
        .searchUsers(q)
        .then((u) => live && setUsers(u))
        .catch(() => live && setUsers([]))
        .finally(() => live && setSearching(false));
    }, 200);
    return () => {
      live = false;
      clearTimeout(t);
    };
  }, [query]);
  return { users, searching };
}

function PanelHeader({ title, onBack }: { title: string; onBack: () => void }) {
  return (
    <header class="chat-header">
      <button class="icon-btn" type="button" aria-label="Back" onClick={onBack}>
        <Icon name="back" />
      </button>
      <div class="chat-title">
        <h2>{title}</h2>
      </div>
    </header>
  );
}

/** E2EE is chosen when a conversation is created and never changes after. */
function LockToggle({ on, set }: { on: boolean; set: (on: boolean) => void }) {
  return (
    <label class="lock-toggle">
      <input type="checkbox" checked={on} onChange={(e) => set(e.currentTarget.checked)} />
      <span>🔒 End-to-end encrypted</span>
    </label>
  );
}

export function NewChat() {
  const { store } = useServices();
  const [e2ee, setE2ee] = useState(false);
  const [q, setQ] = useState("");
  const { users, searching } = useUserSearch(q);
  const [error, setError] = useState<string | null>(null);
  const page = useRef<HTMLElement>(null);
  const search = useRef<HTMLInputElement>(null);
  useFocusHandoff(page, search);
  return (
    <section class="page" ref={page} aria-label="New chat">
      <PanelHeader title="New chat" onBack={() => store.navigate({ name: "list" })} />
      <div class="page-body">
        <label class="field">
          Find people by username
          <input ref={search} type="search" value={q} autocomplete="off" spellcheck={false} placeholder="username" onInput={(e) => setQ(e.currentTarget.value)} />
        </label>
        <LockToggle on={e2ee} set={setE2ee} />
        <p class="form-error" role="alert">{error ?? ""}</p>
        <ul class="people" role="list" aria-busy={searching}>
          {users.map((u) => (
            <li key={u.id}>
              <button
                class="person"
                type="button"
                data-username={u.username}
                onClick={() => store.startDirect(u.id, e2ee).catch((err: unknown) => setError(err instanceof ApiRequestError ? err.message : "Could not start the chat."))}
              >
                <Avatar id={u.id} name={u.displayName} />
                <span class="person-name">
                  <strong>{u.displayName}</strong>
                  <span class="muted">@{u.username}</span>
                </span>
              </button>
            </li>
          ))}
        </ul>
        {q.trim() && !searching && users.length === 0 ? <p class="muted">No one found for “{q}”.</p> : null}
        <button class="btn" type="button" onClick={() => store.navigate({ name: "new-group" })}>
          <Icon name="group" /> New group
        </button>
      </div>
    </section>
  );
}

/** Search plus chips of the chosen people. */
function PeoplePicker({ chosen, setChosen, exclude }: { chosen: User[]; setChosen: (u: User[]) => void; exclude: Set<string> }) {
  const [q, setQ] = useState("");
  const { users, searching } = useUserSearch(q);
  const ids = new Set(chosen.map((u) => u.id));
  return (
    <div class="picker">
      {chosen.length > 0 ? (
        <ul class="chips" role="list" aria-label="Chosen people">
          {chosen.map((u) => (
            <li key={u.id} class="chip">
              {u.displayName}
              <button type="button" class="chip-x" aria-label={`Remove ${u.displayName}`} onClick={() => setChosen(chosen.filter((c) => c.id !== u.id))}>
                <Icon name="close" size={14} />
              </button>
            </li>
          ))}
        </ul>
      ) : null}
      <label class="field">
        Add people
        <input type="search" value={q} autocomplete="off" spellcheck={false} placeholder="username" onInput={(e) => setQ(e.currentTarget.value)} />
      </label>
      <ul class="people" role="list" aria-busy={searching}>
        {users
          .filter((u) => !ids.has(u.id) && !exclude.has(u.id))
          .map((u) => (
            <li key={u.id}>
              <button class="person" type="button" data-username={u.username} onClick={() => { setChosen([...chosen, u]); setQ(""); }}>
                <Avatar id={u.id} name={u.displayName} size={32} />
                <span class="person-name">
                  <strong>{u.displayName}</strong>
                  <span class="muted">@{u.username}</span>
                </span>
                <Icon name="plus" />
              </button>
            </li>
          ))}
      </ul>
    </div>
  );
}

export function NewGroup() {
  const { store } = useServices();
  const [title, setTitle] = useState("");
  const [chosen, setChosen] = useState<User[]>([]);
  const [e2ee, setE2ee] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const page = useRef<HTMLElement>(null);
  const name = useRef<HTMLInputElement>(null);
  useFocusHandoff(page, name);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await store.createGroup(title.trim(), chosen.map((u) => u.id), e2ee);
    } catch (err) {
      setError(err instanceof ApiRequestError ? err.message : "Could not create the group.");
    } finally {
      setBusy(false);
    }
  };
  return (
    <section class="page" ref={page} aria-label="New group">
      <PanelHeader title="New group" onBack={() => store.navigate({ name: "list" })} />
      <form class="page-body" onSubmit={submit}>
        <label class="field">
          Group name
          <input ref={name} required maxLength={100} value={title} onInput={(e) => setTitle(e.currentTarget.value)} />
        </label>
        <PeoplePicker chosen={chosen} setChosen={setChosen} exclude={new Set([store.me])} />
        <LockToggle on={e2ee} set={setE2ee} />
        <p class="form-error" role="alert">{error ?? ""}</p>
        <button class="btn btn-primary" type="submit" disabled={busy || !title.trim()}>
          {busy ? "Creating…" : `Create group${chosen.length > 0 ? ` with ${chosen.length} ${chosen.length === 1 ? "person" : "people"}` : ""}`}
        </button>
      </form>
    </section>
  );
}

export function GroupInfo({ conv }: { conv: Conversation }) {
  const { store } = useServices();
  const me = store.me;
  const isAdmin = conv.members.some((m) => m.userId === me && m.role === "admin");
  const [adding, setAdding] = useState<User[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [confirmLeave, setConfirmLeave] = useState(false);
  const [removing, setRemoving] = useState<string | null>(null);
  const [editing, setEditing] = useState(false);
  // Asking to leave moves the focus to Cancel (the safe answer); answering Cancel returns it.
  const leaveButton = useRef<HTMLButtonElement>(null);
  const cancelButton = useRef<HTMLButtonElement>(null);
  const asked = useRef(false);
  useEffect(() => {
    if (confirmLeave) cancelButton.current?.focus();
    else if (asked.current) leaveButton.current?.focus();
    asked.current ||= confirmLeave;
  }, [confirmLeave]);
  const close = () => store.navigate({ name: "chat", id: conv.id, thread: null, info: false });
  const other = conv.type === "direct" ? store.otherMember(conv) : null;
  const showSafety = (userId: string) => store.navigate({ name: "chat", id: conv.id, thread: null, info: false, safety: userId });
  const run = async (f: () => Promise<void>) => {
    setError(null);
    try {
      await f();
    } catch (err) {
      setError(err instanceof ApiRequestError ? err.message : "That did not work. Try again.");
    }
  };
  useEscape(close, conv.id);
  const panel = useRef<HTMLElement>(null);
  // Another device or admin may dismiss this one meanwhile: what they could do goes with it.
  useEffect(() => {
    if (!isAdmin) {
      setEditing(false);
      setRemoving(null);
    }
  }, [isAdmin]);
  const heading = useRef<HTMLHeadingElement>(null);
  useFocusHandoff(panel, heading);
  const now = Date.now();
  return (
    <aside class="side-panel" ref={panel} aria-label={conv.type === "group" ? "Group info" : "Contact info"}>
      <header class="panel-header">
        <h2 ref={heading} tabIndex={-1}>{conv.type === "group" ? "Group info" : "Contact"}</h2>
        <button class="icon-btn" type="button" aria-label="Close" onClick={close}>
          <Icon name="close" />
        </button>
      </header>
      <div class="page-body">
        <div class="profile">
          <Avatar id={conv.type === "group" ? conv.id : store.otherMember(conv) ?? conv.id} name={store.title(conv)} size={72} group={conv.type === "group"} />
          <h3 dir="auto">{store.title(conv)}</h3>
          {conv.type === "group" ? <p class="muted">{conv.members.length} members</p> : null}
          {conv.type === "group" && conv.description ? (
            <p class="group-description" dir="auto" data-testid="group-description">
              {conv.description}
            </p>
          ) : null}
        </div>
        {conv.type === "group" && isAdmin ? (
          editing ? (
            <GroupSettingsForm conv={conv} run={run} done={() => setEditing(false)} />
          ) : (
            <button class="btn" type="button" onClick={() => setEditing(true)}>
              Edit name and description
            </button>
          )
        ) : null}
        {other ? (
          <div class="safety-entry">
            <button class="btn" type="button" onClick={() => showSafety(other)}>
              <Icon name="shield" /> Safety number
            </button>
            <VerifiedMark userId={other} />
          </div>
        ) : null}
        {conv.e2ee ? <EncryptionInfo conv={conv} /> : null}
        <ConversationSettingsSection conv={conv} />
        {conv.type === "group" ? (
          <>
            <h4>Members</h4>
            <ul class="people" role="list">
              {conv.members.map((m) => {
                const p = store.presenceOf(m.userId);
                return (
                  <li key={m.userId} class="member">
                    <Avatar id={m.userId} name={store.state.users.get(m.userId)?.displayName ?? "?"} size={32} presence={m.userId === me ? undefined : p} />
                    <span class="person-name">
                      <strong>{m.userId === me ? "You" : store.userName(m.userId)}</strong>
                      <span class="muted">{m.role === "admin" ? "Admin" : lastSeen(p, now)}</span>
                      {isAdmin && m.userId !== me ? <RoleButton conv={conv} member={m} run={run} /> : null}
                    </span>
                    {m.userId !== me ? <VerifiedMark userId={m.userId} /> : null}
                    {m.userId !== me ? (
                      <button class="icon-btn" type="button" aria-label={`Safety number with ${store.userName(m.userId)}`} title="Safety number" onClick={() => showSafety(m.userId)}>
                        <Icon name="shield" />
                      </button>
                    ) : null}
                    {isAdmin && m.userId !== me ? (
                      <button class="link-btn danger" type="button" aria-label={`Remove ${store.userName(m.userId)}`} onClick={() => setRemoving(m.userId)}>
                        Remove
                      </button>
                    ) : null}
                  </li>
                );
              })}
            </ul>
            {isAdmin ? (
              <form
                class="add-members"
                onSubmit={(e) => {
                  e.preventDefault();
                  void run(async () => {
                    await store.addMembers(conv.id, adding.map((u) => u.id));
                    setAdding([]);
                  });
                }}
              >
                <PeoplePicker chosen={adding} setChosen={setAdding} exclude={new Set(conv.members.map((m) => m.userId))} />
                <button class="btn" type="submit" disabled={adding.length === 0}>
                  Add {adding.length > 0 ? adding.length : ""} to group
                </button>
              </form>
            ) : null}
            <p class="form-error" role="alert">{error ?? ""}</p>
            {removing !== null ? (
              <ConfirmDialog
                title="Remove member?"
                confirmLabel="Remove"
                onCancel={() => setRemoving(null)}
                onConfirm={() => {
                  const userId = removing;
                  setRemoving(null);
                  // The member's row (and the button that opened the dialog) goes with them.
                  heading.current?.focus();
                  void run(() => store.removeMember(conv.id, userId));
                }}
              >
                Remove {store.userName(removing)} from “{store.title(conv)}”? They keep what they could read until now, and see nothing new.
              </ConfirmDialog>
            ) : null}
            {confirmLeave ? (
              <div class="confirm" role="group" aria-label="Confirm leaving">
                <span>Leave “{store.title(conv)}”?</span>
                <button class="btn btn-danger" type="button" onClick={() => void run(() => store.removeMember(conv.id, me))}>
                  Leave
                </button>
                <button class="btn" type="button" ref={cancelButton} onClick={() => setConfirmLeave(false)}>
                  Cancel
                </button>
              </div>
            ) : (
              <button class="btn btn-danger" type="button" ref={leaveButton} onClick={() => setConfirmLeave(true)}>
                <Icon name="logout" /> Leave group
              </button>
            )}
          </>
        ) : null}
      </div>
    </aside>
  );
}

/** Make a member an admin, or dismiss them as one (an admin's choice; docs/api.md, Group settings). */
function RoleButton({ conv, member, run }: { conv: Conversation; member: Member; run: (f: () => Promise<void>) => Promise<void> }) {
  const { store } = useServices();
  const name = store.userName(member.userId);
  const admin = member.role === "admin";
  return (
    <button
      class="link-btn role-btn"
      type="button"
      // The visible words first, as the name's start (a speech user says what they see).
      aria-label={admin ? `Dismiss as admin: ${name}` : `Make admin: ${name}`}
      onClick={() => void run(() => store.setRole(conv.id, member.userId, admin ? "member" : "admin"))}
    >
      {admin ? "Dismiss as admin" : "Make admin"}
    </button>
  );
}

/** The group's name and description, as an admin edits them; only what changed is sent. */
function GroupSettingsForm({ conv, run, done }: { conv: Conversation; run: (f: () => Promise<void>) => Promise<void>; done: () => void }) {
  const { store } = useServices();
  const [title, setTitle] = useState(conv.title ?? "");
  const [description, setDescription] = useState(conv.description ?? "");
  const [busy, setBusy] = useState(false);
  const form = useRef<HTMLFormElement>(null);
  const first = useRef<HTMLInputElement>(null);
  useFocusHandoff(form, first);
  const submit = (e: Event) => {
    e.preventDefault();
    const change: { title?: string; description?: string | null } = {};
    if (title.trim() !== (conv.title ?? "")) change.title = title.trim();
    if (description.trim() !== (conv.description ?? "")) change.description = description.trim() || null;
    if (Object.keys(change).length === 0) {
      done();
      return;
    }
    setBusy(true);
    void run(async () => {
      await store.updateGroupInfo(conv.id, change);
      done();
    }).finally(() => setBusy(false));
  };
  return (
    <form class="group-settings" ref={form} aria-label="Edit group" onSubmit={submit} onKeyDown={(e) => {
      // Escape leaves the form, not the panel.
      if (e.key === "Escape") {
        e.stopPropagation();
        done();
      }
    }}>
      <label class="field">
        Group name
        <input ref={first} required maxLength={LIMITS.titleMax} value={title} onInput={(e) => setTitle(e.currentTarget.value)} />
      </label>
      <label class="field">
        Description <span class="optional">(optional)</span>
        <textarea rows={3} maxLength={LIMITS.descriptionMax} value={description} onInput={(e) => setDescription(e.currentTarget.value)} />
      </label>
      {conv.e2ee ? <p class="muted">The name and description are not end-to-end encrypted: the server stores them as they are.</p> : null}
      <div class="form-actions">
        <button class="btn btn-primary" type="submit" disabled={busy || !title.trim()}>
          {busy ? "Saving…" : "Save"}
        </button>
        <button class="btn" type="button" onClick={done}>
          Cancel
        </button>
      </div>
    </form>
  );
}
