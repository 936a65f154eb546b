// Previews, schedules and the rest of the files page (tree view, git clone).
import { shoot, signInAsAdmin, watchedPage } from '../lib.mjs';

export const scenarios = {
};
