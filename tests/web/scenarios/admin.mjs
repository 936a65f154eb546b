// The administrator's pages: users, workspaces, invites, the audit trail, capacity.
import { shoot, signInAsAdmin, watchedPage } from '../lib.mjs';

export const scenarios = {
};
