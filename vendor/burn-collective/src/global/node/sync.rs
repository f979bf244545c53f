use std::{
    marker::PhantomData,
    sync::{Arc, Mutex},
    vec,
};

use burn_communication::{CommunicationChannel, Message, Protocol, ProtocolClient};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, RwLock};

use crate::{NodeId, node::base::NodeState};

/// Handles the status of sync requests from other nodes
pub(crate) struct SyncService<P: Protocol> {
    /// Current node's state, shared with the thread that does aggregations
    node_state: Arc<RwLock<Option<NodeState>>>,
    /// The number of peers that have requested to sync with us since the last successful sync.
    syncing_peers: Mutex<Vec<NodeId>>,
    /// Notification on each incoming sync request
    sync_notif: Notify,

    _p: PhantomData<P>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SyncRequest(NodeId);

impl<P: Protocol> SyncService<P> {
    pub fn new(node_state: Arc<RwLock<Option<NodeState>>>) -> Self {
        Self {
            node_state,
            syncing_peers: Mutex::new(vec![]),
            sync_notif: Notify::new(),
            _p: PhantomData,
        }
    }

    fn add_syncing_peer(&self, peer: NodeId) {
        let mut syncing_peers = self.syncing_peers.lock().unwrap();
        syncing_peers.push(peer);
    }

    /// Sync with all peers.
    pub async fn sync(&self) {
        // we can't sync while we register
        let node_state = self.node_state.read().await;
        let node_state = node_state
            .as_ref()
            .expect("Trying to sync a node before having registered to the orchestrator");

        // this peer is syncing
        self.add_syncing_peer(node_state.node_id);
        for (id, addr) in &node_state.nodes {
            if *id == node_state.node_id {
                continue;
            }

            let mut connection = connect_sync::<P>(addr).await;
            let msg = SyncRequest(node_state.node_id);
            let sync_bytes = rmp_serde::to_vec(&msg).unwrap();
            connection
                .send(Message::new(sync_bytes.into()))
                .await
                .expect("Peer closed connection unexpectedly");
        }
        loop {
            {
                // Colossus patch: 0.21.0 compared and cleared a *copy* of `syncing_peers`, so the
                // shared list kept every id after the first sync and every later sync (every
                // later global all-reduce) waited forever. Consume one request per node instead,
                // leaving any early request for the next sync in place.
                let mut syncing_peers = self.syncing_peers.lock().unwrap();
                let all_node_ids = node_state.nodes.keys().cloned().collect::<Vec<_>>();
                if all_node_ids.iter().all(|id| syncing_peers.contains(id)) {
                    for id in &all_node_ids {
                        let at = syncing_peers.iter().position(|p| p == id).unwrap();
                        syncing_peers.remove(at);
                    }
                    return;
                }
            }
            // Wait for the next sync to come in
            self.sync_notif.notified().await
        }
    }

    pub async fn handle_sync_connection<C: CommunicationChannel>(&self, mut channel: C) {
        let msg = channel.recv().await.unwrap();
        let Some(msg) = msg else {
            return;
        };

        let msg = rmp_serde::from_slice::<SyncRequest>(&msg.data).unwrap();

        self.add_syncing_peer(msg.0);

        // Colossus patch: `notify_one` keeps a permit when the syncing task is not waiting yet
        // (between its check and `notified()`); `notify_waiters` lost that wake-up.
        self.sync_notif.notify_one();
    }
}

/// How long a sync keeps dialling a peer whose server is not up yet (Colossus patch).
const SYNC_CONNECT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Colossus patch: 0.21.0 dialled once and panicked. A node's server is spawned just before it
/// registers, so with three or more nodes a peer that is not this node's ring neighbour may not
/// have been reached yet and its socket may still be unbound. Retry every 20 ms until the
/// deadline, then panic as before.
async fn connect_sync<P: Protocol>(
    addr: &burn_communication::Address,
) -> <P::Client as ProtocolClient>::Channel {
    let deadline = tokio::time::Instant::now() + SYNC_CONNECT_DEADLINE;
    loop {
        if let Some(connection) = P::Client::connect(addr.clone(), "sync").await {
            return connection;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("Couldn't connect to peer {addr:?} for sync within {SYNC_CONNECT_DEADLINE:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
