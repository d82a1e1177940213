def test_probe(ray_session):
    import ray
    from ray.dashboard.utils import get_address_for_submission_client
    print("GCS", ray.get_runtime_context().gcs_address)
    print("API", get_address_for_submission_client(ray.get_runtime_context().gcs_address))
    from ray.util.state import list_actors
    try:
        print(len(list_actors(address=ray.get_runtime_context().gcs_address)))
    except Exception as e:
        print("ERR", type(e))
